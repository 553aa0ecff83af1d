//! Eureka's wire contract, in one place: what a Eureka v2 document looks like on the wire and
//! how to read it leniently, used by both sides of every Eureka conversation in the workspace.
//!
//! Where it sits: the built-in core's `/eureka` API (`src/servicecenter/api/eureka.rs`)
//! reads register bodies and writes registry documents with it; the `eureka` plugin
//! (`plugins/eureka`) writes register bodies and reads registry documents with it; the
//! sample apps build their register bodies from its constants. It does no I/O and knows
//! nothing of the neutral model or of service-center: mapping Eureka to either stays with
//! the core and the plugin.
//!
//! - [`xml`]: Eureka's XML (XStream) encoding as the equivalent JSON [`serde_json::Value`],
//!   both ways: [`xml::parse`] (with the nesting bound [`xml::MAX_DEPTH`]), [`xml::write`]
//!   and the streaming [`xml::Writer`], built on quick-xml.
//! - [`field`]: lenient readers of document fields, for the shapes real servers and clients
//!   write (a single object for a one-element array, numbers as strings, `@enabled` as a
//!   string or a boolean, `null` anywhere).
//! - [`hashcode`] and [`hashcode_of_counts`]: `apps__hashcode`.
//! - The constants of the contract: status names, data center names and classes, lease
//!   defaults, the optional string fields of an instance.
//!
//! The behaviour copied from Netflix Eureka is named with its source: the class, or a
//! section of `reference/eureka-notes.md` (eureka-notes §n).

use std::collections::BTreeMap;

pub mod field;
pub mod xml;

/// The instance statuses, as Eureka writes them (`InstanceInfo.InstanceStatus` names).
pub const STATUSES: [&str; 5] = ["UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN"];

/// `UNKNOWN`: the status of anything Eureka does not recognise, and the `overriddenStatus`
/// of an instance without an override.
pub const UNKNOWN: &str = "UNKNOWN";

/// Eureka's renewal interval when a `leaseInfo` has none, seconds
/// (`LeaseInfo.DEFAULT_LEASE_RENEWAL_INTERVAL`).
pub const DEFAULT_RENEWAL_INTERVAL_SECS: u32 = 30;

/// Eureka's lease duration when a `leaseInfo` has none, seconds
/// (`LeaseInfo.DEFAULT_LEASE_DURATION`).
pub const DEFAULT_LEASE_DURATION_SECS: u32 = 90;

/// `dataCenterInfo.name` of a data center that is not Amazon's (`DataCenterInfo.Name.MyOwn`),
/// what clients outside AWS send.
pub const MY_OWN_DC_NAME: &str = "MyOwn";

/// `dataCenterInfo.name` of an AWS data center, whose `metadata` has `instance-id`.
pub const AMAZON_DC_NAME: &str = "Amazon";

/// `dataCenterInfo.@class` of `MyOwn` (and `Netflix`) data centers.
pub const DEFAULT_DC_CLASS: &str = "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo";

/// `dataCenterInfo.@class` of `Amazon` data centers.
pub const AMAZON_DC_CLASS: &str = "com.netflix.appinfo.AmazonInfo";

/// `metadata.@class` of an empty metadata map: Netflix writes `{"@class": EMPTY_MAP_CLASS}`
/// in JSON and `<metadata class="..."/>` in XML (`Converters.InstanceInfoConverter`, "for
/// backward compat."), and old clients expect it.
pub const EMPTY_MAP_CLASS: &str = "java.util.Collections$EmptyMap";

/// The fields of an instance document, by their JSON names, in the order Netflix writes
/// them, in JSON and XML alike (eureka-notes §4.1; `Converters.InstanceInfoConverter`, then
/// `InstanceInfo`'s `@Auto` fields). [`xml::Writer`] writes them in this order.
pub const INSTANCE_FIELDS: &[&str] = &[
    "instanceId",
    "hostName",
    "app",
    "ipAddr",
    "sid",
    "status",
    "overriddenStatus",
    "port",
    "securePort",
    "countryId",
    "dataCenterInfo",
    "leaseInfo",
    "metadata",
    "appGroupName",
    "homePageUrl",
    "statusPageUrl",
    "healthCheckUrl",
    "secureHealthCheckUrl",
    "vipAddress",
    "secureVipAddress",
    "isCoordinatingDiscoveryServer",
    "lastUpdatedTimestamp",
    "lastDirtyTimestamp",
    "actionType",
    "asgName",
];

/// The optional string fields of an instance document, in Netflix's output order
/// (`InstanceInfo`'s `@Auto` fields).
pub const STRING_FIELDS: &[&str] = &[
    "appGroupName",
    "homePageUrl",
    "statusPageUrl",
    "healthCheckUrl",
    "secureHealthCheckUrl",
    "vipAddress",
    "secureVipAddress",
    "asgName",
];

/// `apps__hashcode` over the statuses of a set of instances (eureka-notes §4.5; Netflix
/// `Applications.getReconcileHashCode`): `STATUS_COUNT_` for each status with instances,
/// statuses in name order (`DOWN_1_UP_3_`); empty for none.
pub fn hashcode<'a>(statuses: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_default() += 1;
    }
    hashcode_of_counts(&counts)
}

/// `apps__hashcode` from counts kept per status (the map orders the statuses by name, as
/// the hash wants); a status counted 0 adds nothing.
pub fn hashcode_of_counts<S: AsRef<str>>(counts: &BTreeMap<S, usize>) -> String {
    counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{}_{n}_", s.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hashcode_counts_statuses_in_name_order() {
        assert_eq!(
            hashcode(["UP", "DOWN", "UP", "OUT_OF_SERVICE"]),
            "DOWN_1_OUT_OF_SERVICE_1_UP_2_"
        );
        assert_eq!(hashcode([]), "");
    }

    #[test]
    fn the_hashcode_of_kept_counts_skips_zeros() {
        let counts = BTreeMap::from([("UP".to_owned(), 2), ("DOWN".to_owned(), 0)]);
        assert_eq!(hashcode_of_counts(&counts), "UP_2_");
    }
}

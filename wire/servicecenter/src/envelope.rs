//! Request and reply envelopes of the v4 API around the records of [`crate::model`].
//!
//! Lists are left out when empty on writing (service-center answers `{}` for an empty
//! list) and default to empty on reading.

use serde::{Deserialize, Serialize};

use crate::model::{MicroService, MicroServiceInstance};

/// `GET .../microservices` → `{"services":[...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServicesReply {
    /// The microservices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<MicroService>,
}

/// `GET .../microservices/{serviceId}` → `{"service":{...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceReply {
    /// The microservice.
    #[serde(default)]
    pub service: MicroService,
}

/// `GET .../instances` (list and find) → `{"instances":[...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstancesReply {
    /// The instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<MicroServiceInstance>,
}

/// `GET .../instances/{instanceId}` → `{"instance":{...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceReply {
    /// The instance.
    #[serde(default)]
    pub instance: MicroServiceInstance,
}

/// The id a create, register or existence answers: `{"serviceId"}`, `{"instanceId"}` or
/// `{"schemaId"}` (empty ones left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IdReply {
    /// Set by create and existence of a microservice.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    /// Set by an instance registration.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
    /// Set by existence of a schema.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub schema_id: String,
}

/// `POST .../microservices/{serviceId}/instances` body: `{"instance":{...}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegisterInstanceRequest {
    /// The instance to register.
    #[serde(default)]
    pub instance: MicroServiceInstance,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lists_are_left_out_and_read_back_as_empty() {
        assert_eq!(
            serde_json::to_string(&InstancesReply::default())
                .ok()
                .as_deref(),
            Some("{}")
        );
        let read: Option<ServicesReply> = serde_json::from_str("{}").ok();
        assert_eq!(read, Some(ServicesReply::default()));
    }

    #[test]
    fn an_id_reply_names_only_what_it_has() {
        let id = IdReply {
            instance_id: "i1".into(),
            ..IdReply::default()
        };
        assert_eq!(
            serde_json::to_string(&id).ok().as_deref(),
            Some(r#"{"instanceId":"i1"}"#)
        );
    }
}

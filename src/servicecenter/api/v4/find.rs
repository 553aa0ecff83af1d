//! Discovery: `GET /v4/{project}/registry/instances` (find) and
//! `POST .../instances/action?type=query` (batch find).

use super::*;

pub(super) async fn find(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    Query(q): Query_,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let query = FindQuery {
        env: param(&q, "env").to_string(),
        app_id: param(&q, "appId").to_string(),
        service_name: param(&q, "serviceName").to_string(),
        version: param(&q, "version").to_string(),
        tags: tag_keys(param(&q, "tags")),
    };
    let dom = domain.clone();
    let mut reg = core.lock();
    let ids = crate::servicecenter::registry::discovery::find(
        &mut reg,
        &dom,
        &project,
        &query,
        consumer_header(&headers),
    )?;
    let current = is_current(reg.revision(), &q, &headers);
    Ok(found_reply(reg, &ids, current))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FindResult<'a> {
    index: usize,
    rev: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    instances: Vec<&'a MicroServiceInstance>,
}

#[derive(Serialize)]
pub(super) struct FailedError {
    #[serde(rename = "errorCode")]
    error_code: String,
    #[serde(rename = "errorMessage")]
    error_message: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
}

#[derive(Serialize)]
pub(super) struct FindFailed {
    indexes: Vec<usize>,
    error: FailedError,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatchResult<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    updated: Vec<FindResult<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_modified: Vec<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed: Vec<FindFailed>,
}

impl<'a> BatchResult<'a> {
    fn is_empty(&self) -> bool {
        self.updated.is_empty() && self.not_modified.is_empty() && self.failed.is_empty()
    }

    fn add(
        &mut self,
        index: usize,
        rev: &str,
        client_rev: &str,
        r: Result<Vec<&'a MicroServiceInstance>, ScError>,
    ) {
        match r {
            Ok(_) if client_rev == rev => self.not_modified.push(index),
            Ok(instances) => self.updated.push(FindResult {
                index,
                rev: rev.to_string(),
                instances,
            }),
            Err(e) => {
                // Failures with the same error share one entry (as service-center groups them).
                match self.failed.iter_mut().find(|f| {
                    f.error.error_code == e.code.to_string() && f.error.detail == e.detail
                }) {
                    Some(f) => f.indexes.push(index),
                    None => self.failed.push(FindFailed {
                        indexes: vec![index],
                        error: FailedError {
                            error_code: e.code.to_string(),
                            error_message: ScError::message(e.code),
                            detail: e.detail,
                        },
                    }),
                }
            }
        }
    }
}

#[derive(Serialize, Default)]
pub(super) struct BatchFindReply<'a> {
    #[serde(skip_serializing_if = "BatchResult::is_empty")]
    services: BatchResult<'a>,
    #[serde(skip_serializing_if = "BatchResult::is_empty")]
    instances: BatchResult<'a>,
}

/// `POST /registry/instances/action?type=query`: several finds (by service key) and
/// instance reads (by id) at once; each index is `updated`, `notModified` (its `rev` is
/// current) or `failed`.
pub(super) async fn batch_find(
    State(core): State<Core>,
    tenant: Tenant,
    Query(q): Query_,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScError> {
    match param(&q, "type") {
        "query" => {}
        "register" => return batch_register(&core, &tenant, &body),
        other => {
            return Err(ScError::invalid(format!(
                "Invalid type '{other}': query or register"
            )))
        }
    }
    let req: BatchFindRequest = decode(&body)?;
    if req.services.is_empty() && req.instances.is_empty() {
        return Err(ScError::invalid(
            "Invalid request: services and instances are both empty",
        ));
    }
    let Tenant {
        domain: dom,
        project,
    } = tenant;
    let consumer = consumer_header(&headers);
    let mut guard = core.lock();
    let mut reply = BatchFindReply::default();
    let mut outcomes = Vec::new();
    for (i, item) in req.services.iter().enumerate() {
        let r = match &item.service {
            None => Err(ScError::invalid("Invalid service: missing")),
            Some(k) => crate::servicecenter::registry::discovery::find(
                &mut guard,
                &dom,
                &project,
                &FindQuery {
                    env: k.environment.clone(),
                    app_id: k.app_id.clone(),
                    service_name: k.service_name.clone(),
                    version: if k.version.is_empty() {
                        "0+".into()
                    } else {
                        k.version.clone()
                    },
                    tags: Vec::new(),
                },
                consumer,
            ),
        };
        outcomes.push((i, r));
    }
    let reg = &*guard;
    let rev = reg.revision().to_string();
    for (i, r) in &outcomes {
        let r = r
            .as_ref()
            .map(|ids| Found::new(reg, ids).iter().collect())
            .map_err(Clone::clone);
        reply.services.add(*i, &rev, &req.services[*i].rev, r);
    }
    for (i, item) in req.instances.iter().enumerate() {
        let r = match &item.instance {
            None => Err(ScError::invalid("Invalid instance: missing")),
            Some(k) => crate::servicecenter::registry::discovery::visible_provider(
                reg,
                &dom,
                &project,
                &k.service_id,
                consumer,
            )
            .and_then(|p| {
                p.instances
                    .get(&k.instance_id)
                    .map(|r| vec![&r.body])
                    .ok_or_else(|| {
                        ScError::new(
                            INSTANCE_NOT_EXISTS,
                            format!("instance {} does not exist", k.instance_id),
                        )
                    })
            }),
        };
        reply.instances.add(i, &rev, &item.rev, r);
    }
    let body = to_json(&reply, 1024);
    drop(reply);
    drop(guard);
    Ok(json_reply(body))
}

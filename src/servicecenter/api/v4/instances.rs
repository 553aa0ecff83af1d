//! Instances of a microservice: register (one or a batch), list, get, heartbeat (one or a
//! batch), status, properties, unregister; revision headers of reads.

use super::*;

pub(super) async fn register_instance(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: RegisterInstanceRequest = decode(&body)?;
    let instance = req
        .instance
        .ok_or_else(|| ScError::invalid("Invalid field 'instance': missing"))?;
    let id = core.lock().register_instance(
        &domain,
        &project,
        &sid,
        instance,
        Instant::now(),
        now_ms(),
    )?;
    Ok(json(&IdReply {
        instance_id: id,
        ..IdReply::default()
    }))
}

/// `POST /registry/instances/action?type=register` (syncer extension): creates up to
/// [`MAX_BATCH_REGISTER`] microservices as one `POST .../microservices` each would (an
/// existing key answers its id), then registers up to [`MAX_BATCH_REGISTER`] instances,
/// each naming its service in `serviceId`, as one `POST .../instances` each would, under
/// one lock: `{"services":[...], "instances":[...]}` in (either may be left out),
/// `{"services":[{"serviceId"} or {error}], "instances":[{"instanceId"} or {error}]}` out,
/// in order, an error being `{"errorCode","errorMessage","detail"}`. A failing item fails
/// alone. A real service-center answers 400 (unknown type), which tells a client to create
/// and register one by one.
///
/// # Errors
/// 400001 on a malformed body, nothing to do, or a list longer than the limit.
pub(super) fn batch_register(
    core: &Core,
    tenant: &Tenant,
    body: &[u8],
) -> Result<Response, ScError> {
    let req: BatchRegisterRequest = decode(body)?;
    if (req.instances.is_empty() && req.services.is_empty())
        || req.instances.len() > MAX_BATCH_REGISTER
        || req.services.len() > MAX_BATCH_REGISTER
    {
        return Err(ScError::invalid(format!(
            "Invalid fields 'services', 'instances': 1 to {MAX_BATCH_REGISTER} items in all, \
             at most {MAX_BATCH_REGISTER} of each, got {} and {}",
            req.services.len(),
            req.instances.len()
        )));
    }
    let (dom, project) = (&tenant.domain, &tenant.project);
    let (now, wall) = (Instant::now(), now_ms());
    let failed = |e: ScError| BatchRegisterItem {
        error_code: e.code.to_string(),
        error_message: ScError::message(e.code),
        detail: e.detail,
        ..BatchRegisterItem::default()
    };
    let mut reg = core.lock();
    let services: Vec<BatchRegisterItem> = req
        .services
        .into_iter()
        .map(
            |service| match reg.create_service(dom, project, service, wall) {
                Ok((service_id, _)) => BatchRegisterItem {
                    service_id,
                    ..BatchRegisterItem::default()
                },
                Err(e) => failed(e),
            },
        )
        .collect();
    let items: Vec<BatchRegisterItem> = req
        .instances
        .into_iter()
        .map(|instance| {
            let sid = instance.service_id.clone();
            let done = check_id("serviceId", &sid)
                .and_then(|()| reg.register_instance(dom, project, &sid, instance, now, wall));
            match done {
                Ok(instance_id) => BatchRegisterItem {
                    instance_id,
                    ..BatchRegisterItem::default()
                },
                Err(e) => failed(e),
            }
        })
        .collect();
    drop(reg);
    Ok(json(
        &serde_json::json!({ "services": services, "instances": items }),
    ))
}

/// The `rev` a client sent (`?rev=`, else the `X-Resource-Revision` request header).
pub(super) fn client_rev<'a>(
    q: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
) -> Option<&'a str> {
    q.get("rev")
        .map(String::as_str)
        .or_else(|| {
            headers
                .get("x-resource-revision")
                .and_then(|v| v.to_str().ok())
        })
        .filter(|r| !r.is_empty())
}

/// Whether the client's rev is the revision `rev` (the reply is then a 304 with an empty
/// body; `noCache`/`cacheOnly` make the rev ignored, as in 1.3.0).
pub(super) fn is_current(rev: u64, q: &HashMap<String, String>, headers: &HeaderMap) -> bool {
    let ignore = flag(q, "noCache").unwrap_or(false) || flag(q, "cacheOnly").unwrap_or(false);
    !ignore && client_rev(q, headers).is_some_and(|c| c == rev.to_string())
}

/// `reply` (`None`: 304 with an empty body) with `X-Resource-Revision: rev`.
pub(super) fn revision_reply(rev: u64, reply: Option<Response>) -> Response {
    let mut r = reply.unwrap_or_else(|| StatusCode::NOT_MODIFIED.into_response());
    r.headers_mut()
        .insert("x-resource-revision", HeaderValue::from(rev));
    r
}

/// Adds `X-Resource-Revision` (the revision `rev`); 304 with an empty body when the
/// client's rev is current ([`is_current`]).
pub(super) fn with_revision(
    rev: u64,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    reply: impl FnOnce() -> Response,
) -> Response {
    let current = is_current(rev, q, headers);
    revision_reply(rev, (!current).then(reply))
}

/// The reply of a find or instance list of the providers `ids`: the JSON parts are taken
/// (or made) under the lock ([`crate::servicecenter::registry::discovery::found_parts`]), joined after it.
pub(super) fn found_reply(
    mut reg: MutexGuard<'_, Registry>,
    ids: &[String],
    current: bool,
) -> Response {
    let rev = reg.revision();
    let parts =
        (!current).then(|| crate::servicecenter::registry::discovery::found_parts(&mut reg, ids));
    drop(reg);
    let body = parts.map(|p| {
        p.map(|p| crate::servicecenter::registry::discovery::found_json(&p))
            .map_err(|e| ScError::new(500003, format!("encoding the reply: {e}")))
    });
    revision_reply(rev, body.map(json_reply))
}

pub(super) fn consumer_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-consumerid")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

pub(super) async fn list_instances(
    State(core): State<Core>,
    ServiceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
    }: ServiceAt,
    Query(q): Query_,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let tags = tag_keys(param(&q, "tags"));
    let reg = core.lock();
    let provider = crate::servicecenter::registry::discovery::visible_provider(
        &reg,
        &domain,
        &project,
        &sid,
        consumer_header(&headers),
    )?;
    let ids = if reg.tags.has_all(&sid, &tags) {
        vec![provider.service.service_id.clone()]
    } else {
        Vec::new()
    };
    let current = is_current(reg.revision(), &q, &headers);
    Ok(found_reply(reg, &ids, current))
}

pub(super) async fn get_instance(
    State(core): State<Core>,
    InstanceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
        instance_id: iid,
    }: InstanceAt,
    Query(q): Query_,
    headers: HeaderMap,
) -> Result<Response, ScError> {
    let tags = tag_keys(param(&q, "tags"));
    let reg = core.lock();
    let provider = crate::servicecenter::registry::discovery::visible_provider(
        &reg,
        &domain,
        &project,
        &sid,
        consumer_header(&headers),
    )?;
    let instance = provider
        .instances
        .get(&iid)
        .filter(|_| reg.tags.has_all(&sid, &tags))
        .map(|r| r.body.clone())
        .ok_or_else(|| {
            ScError::new(
                INSTANCE_NOT_EXISTS,
                format!("instance {iid} does not exist"),
            )
        })?;
    let rev = reg.revision();
    drop(reg);
    Ok(with_revision(rev, &q, &headers, || {
        json(&InstanceReply { instance })
    }))
}

pub(super) async fn unregister(
    State(core): State<Core>,
    InstanceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
        instance_id: iid,
    }: InstanceAt,
) -> Result<Response, ScError> {
    core.lock().unregister(&domain, &project, &sid, &iid)?;
    Ok(empty())
}

/// `PUT .../instances/{instanceId}/heartbeat`: 200 empty.
///
/// # Errors
/// 400001 for an instanceId no registration can have (service-center 1.3.0 checks the
/// heartbeat's ids with the registration's rules); 400012/400017 unknown service/instance.
pub(super) async fn heartbeat(
    State(core): State<Core>,
    InstanceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
        instance_id: iid,
    }: InstanceAt,
) -> Result<Response, ScError> {
    check_instance_id(&iid)?;
    let now = Instant::now();
    let renewed = core
        .lock()
        .heartbeat(&domain, &project, &sid, &iid, now, now_ms());
    core.metrics()
        .heartbeats(now, u64::from(renewed.is_ok()), u64::from(renewed.is_err()));
    renewed?;
    // Renewals are written lazily: no wait for a commit.
    Ok(lazy(empty()))
}

/// `PUT /registry/heartbeats`: all renewed → 200 empty; any failure → 400017 naming them
/// (1.3.0; the others are renewed all the same).
pub(super) async fn heartbeats(
    State(core): State<Core>,
    Tenant { domain, project }: Tenant,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: HeartbeatsRequest = decode(&body)?;
    if req.instances.is_empty() {
        return Err(ScError::invalid("Invalid instances: at least one"));
    }
    let dom = domain.clone();
    let (now, wall) = (Instant::now(), now_ms());
    let mut reg = core.lock();
    let failed: Vec<String> = req
        .instances
        .iter()
        .filter(|k| {
            reg.heartbeat(&dom, &project, &k.service_id, &k.instance_id, now, wall)
                .is_err()
        })
        .map(|k| format!("{}/{}", k.service_id, k.instance_id))
        .collect();
    drop(reg);
    let refused = failed.len() as u64;
    core.metrics()
        .heartbeats(now, req.instances.len() as u64 - refused, refused);
    if !failed.is_empty() {
        return Err(ScError::new(
            INSTANCE_NOT_EXISTS,
            format!("heartbeat failed for {}", failed.join(",")),
        ));
    }
    Ok(lazy(empty()))
}

pub(super) async fn set_status(
    State(core): State<Core>,
    InstanceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
        instance_id: iid,
    }: InstanceAt,
    Query(q): Query_,
) -> Result<Response, ScError> {
    core.lock()
        .set_instance_status(&domain, &project, &sid, &iid, param(&q, "value"), now_ms())?;
    Ok(empty())
}

pub(super) async fn set_properties(
    State(core): State<Core>,
    InstanceAt {
        tenant: Tenant { domain, project },
        service_id: sid,
        instance_id: iid,
    }: InstanceAt,
    body: Bytes,
) -> Result<Response, ScError> {
    let req: PropertiesRequest = decode(&body)?;
    core.lock()
        .set_instance_properties(&domain, &project, &sid, &iid, req.properties, now_ms())?;
    Ok(empty())
}

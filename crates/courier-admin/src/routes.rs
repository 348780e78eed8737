//! The routes and their OpenAPI description.
//!
//! Owns the request shapes and the mapping of routes to the operator
//! core's verbs (courier-ops, which also owns the response documents and
//! the validation). Each handler's first argument is its [`Authorized`]
//! caller (axum extracts in order: nothing else is parsed for a caller who
//! fails).

use crate::AdminState;
use crate::auth::{Authorized, Caller, Pause, Purge, Read, Requeue};
use crate::body::{Object, present, whole};
use crate::error::{ApiError, Problem};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use courier_core::DeadReason;
use courier_ops::views::{
    ActionResult, ActionView, AttemptView, BodyEncoding, DeadLetterDetail, DeadLetterView,
    EventDetail, EventView, HoldResult, HoldView, JobTimeline, JobView, ProviderView,
    RateLimitView, ReplayView, StatView,
};
use courier_ops::{DeadQuery, EventQuery};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use uuid::Uuid;

pub(crate) type Shared = State<Arc<AdminState>>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Courier admin API",
        description = "Find, inspect, requeue and purge failed jobs; see, pause and resume providers; read and replay the webhook event log. Bearer tokens carry scopes: read, requeue (which also replays events), purge, pause."
    ),
    paths(whoami, list_dead, dead_stats, show_dead, requeue, purge, show_job, find_jobs, list_actions,
          crate::providers::list_providers, crate::providers::pause_provider, crate::providers::resume_provider,
          list_events, show_event, replay_events),
    components(schemas(Problem, SessionView, DeadLetterView, DeadLetterDetail, StatView, JobView, AttemptView, ActionView,
                       JobTimeline, RequeueRequest, PurgeRequest, FilterBody, ActionResult,
                       ProviderView, RateLimitView, HoldView, crate::providers::PauseRequest, HoldResult,
                       EventView, EventDetail, ReplayView, BodyEncoding, ReplayRequest, EventFilterBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// A filter's text field: not empty, not all white space (Unicode's
/// White_Space spelled out, character by character, so that every regex
/// engine reads it as `str::trim` does), no NUL: what `DeadFilter::check`
/// refuses.
const FILTER_TEXT: &str = r"^[^\u0000]*[^\u0000\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$";

/// A timestamp as RFC 3339 spells it, each month's length known (a format
/// is only a hint to JSON Schema validators). 29 February is left out: the
/// schema allows nothing the server refuses.
const TIMESTAMP: &str = r"^[0-9]{4}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";

/// What utoipa's derive cannot say, added to the generated document (as
/// JSON: utoipa's types cannot read an object schema back with `anyOf`
/// beside its properties): the patterns of filter text and timestamps, and
/// the rules that span fields: a patch holds no NUL, a requeue or purge
/// names its letters (ids, a filter, or for a purge an age), a replay its
/// events (ids, a filter, or `all`), and a pause gives at most one of its
/// two ends. The handlers refuse the same (courier-ops checks the first
/// three, `pause_provider` the last).
pub(crate) fn with_rules(doc: &utoipa::openapi::OpenApi) -> Value {
    let mut v = serde_json::to_value(doc).unwrap_or_default();
    for (path, texts) in [
        ("/dead-letters", &["provider", "operation", "search"][..]),
        (
            "/dead-letters/stats",
            &["provider", "operation", "search"][..],
        ),
        ("/events", &["source", "event_id"][..]),
    ] {
        if let Some(params) = v["paths"][path]["get"]["parameters"].as_array_mut() {
            for param in params {
                if texts.iter().any(|f| param["name"] == *f) {
                    param["schema"]["pattern"] = FILTER_TEXT.into();
                }
            }
        }
    }
    let filter = &mut v["components"]["schemas"]["FilterBody"]["properties"];
    for field in ["provider", "operation", "search"] {
        filter[field]["pattern"] = FILTER_TEXT.into();
    }
    for field in ["since", "until"] {
        filter[field]["pattern"] = TIMESTAMP.into();
    }
    let filter = &mut v["components"]["schemas"]["EventFilterBody"]["properties"];
    for field in ["source", "event_id"] {
        filter[field]["pattern"] = FILTER_TEXT.into();
    }
    for field in ["since", "until"] {
        filter[field]["pattern"] = TIMESTAMP.into();
    }
    v["components"]["schemas"]["PauseRequest"]["properties"]["until"]["pattern"] = TIMESTAMP.into();
    // The body is optional (no body: pause until resumed).
    v["paths"]["/providers/{name}/pause"]["post"]["requestBody"]["required"] = Value::Bool(false);
    let schemas = &mut v["components"]["schemas"];
    let names_letters = |extra: Option<&str>| {
        let mut any = vec![
            serde_json::json!({"required": ["ids"], "properties": {"ids": {"minItems": 1}}}),
            serde_json::json!({"required": ["filter"], "properties": {"filter": {"minProperties": 1}}}),
        ];
        if let Some(field) = extra {
            any.push(serde_json::json!({"required": [field]}));
        }
        Value::Array(any)
    };
    schemas["RequeueRequest"]["anyOf"] = names_letters(None);
    // Any JSON PostgreSQL's jsonb keeps and gives back, where the audit
    // trail records the patch: no NUL in a key or a string, no number
    // beyond ±1e300 (courier_core::patch::unstorable).
    let no_nul = serde_json::json!({"pattern": "^[^\\u0000]*$"});
    schemas["NulFreeJson"] = serde_json::json!({"anyOf": [
        {"type": ["null", "boolean"]},
        {"type": "number", "minimum": -1e300, "maximum": 1e300},
        {"type": "string", "pattern": "^[^\\u0000]*$"},
        {"type": "array", "items": {"$ref": "#/components/schemas/NulFreeJson"}},
        {"type": "object", "propertyNames": no_nul.clone(),
         "additionalProperties": {"$ref": "#/components/schemas/NulFreeJson"}},
    ]});
    let patch = &mut schemas["RequeueRequest"]["properties"]["patch"];
    patch["propertyNames"] = no_nul;
    patch["additionalProperties"] = serde_json::json!({"$ref": "#/components/schemas/NulFreeJson"});
    schemas["PurgeRequest"]["anyOf"] = names_letters(Some("older_than_secs"));
    let mut names_events = names_letters(None);
    if let Some(any) = names_events.as_array_mut() {
        any.push(serde_json::json!({"required": ["all"], "properties": {"all": {"const": true}}}));
    }
    schemas["ReplayRequest"]["anyOf"] = names_events;
    schemas["PauseRequest"]["not"] = serde_json::json!({"required": ["for_secs", "until"]});
    v
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Largest request body read (a requeue's ids, filter and patch).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Longest a read-only request may take, reading included.
const READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

pub fn router(state: Arc<AdminState>) -> Router {
    let reads = Router::new()
        .route("/openapi.json", get(openapi_document))
        .route("/me", get(whoami))
        .route("/actions", get(list_actions))
        .route("/dead-letters", get(list_dead))
        .route("/dead-letters/stats", get(dead_stats))
        .route("/dead-letters/{id}", get(show_dead))
        .route("/jobs", get(find_jobs))
        .route("/jobs/{id}", get(show_job))
        .route("/events", get(list_events))
        .route("/events/{id}", get(show_event))
        .route("/providers", get(crate::providers::list_providers))
        .layer(axum::middleware::from_fn(
            |req, next: axum::middleware::Next| async move {
                match tokio::time::timeout(READ_DEADLINE, next.run(req)).await {
                    Ok(response) => response,
                    Err(_) => axum::response::IntoResponse::into_response(ApiError::Timeout),
                }
            },
        ));
    // Actions run to the end once started (see `detached`): only reading
    // their body is bounded in time, and in size, and only once the token
    // is known to carry the scope (the outer layer runs first).
    let body = || {
        axum::middleware::from_fn(|req, next| {
            courier_telemetry::http::read_body_within(MAX_REQUEST_BYTES, req, next)
        })
    };
    let requeue_route = Router::new()
        .route("/dead-letters/requeue", post(requeue))
        .route("/events/replay", post(replay_events))
        .layer(body())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require::<Requeue>,
        ));
    let purge_route = Router::new()
        .route("/dead-letters/purge", post(purge))
        .layer(body())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require::<Purge>,
        ));
    let pause_routes = Router::new()
        .route(
            "/providers/{name}/pause",
            post(crate::providers::pause_provider),
        )
        .route(
            "/providers/{name}/resume",
            post(crate::providers::resume_provider),
        )
        .layer(body())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require::<Pause>,
        ));
    reads
        .merge(crate::console::router())
        .merge(requeue_route)
        .merge(purge_route)
        .merge(pause_routes)
        .layer(axum::middleware::map_response(crate::error::as_problem))
        .with_state(state)
}

async fn openapi_document() -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "application/json")],
        crate::openapi_json(),
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Most letters returned (default 50, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Include requeued and purged letters.
    all: Option<bool>,
}

/// Which dead letters, as a JSON body: the query's fields (see
/// `GET /dead-letters`), each absent or a value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, min_length = 1)]
    provider: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, min_length = 1)]
    operation: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, inline)]
    reason: Option<DeadReason>,
    /// Last HTTP status.
    #[serde(default, deserialize_with = "whole")]
    #[schema(nullable = false, minimum = 100, maximum = 599)]
    status: Option<i16>,
    /// Dead at or after.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    since: Option<DateTime<Utc>>,
    /// Dead before.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    until: Option<DateTime<Utc>>,
    /// Text in the reason detail or the last error.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, min_length = 1)]
    search: Option<String>,
}

impl From<FilterBody> for DeadQuery {
    fn from(f: FilterBody) -> Self {
        DeadQuery {
            provider: f.provider,
            operation: f.operation,
            reason: f.reason,
            status: f.status,
            since: f.since,
            until: f.until,
            search: f.search,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequeueRequest {
    /// Dead letter ids; with a filter, both must match.
    #[serde(default)]
    ids: Vec<Uuid>,
    #[serde(default)]
    filter: FilterBody,
    /// JSON merge patch (RFC 7396) applied to each job's payload.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, value_type = Object)]
    patch: Option<Value>,
    /// Count and list, change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Most jobs republished per second.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, minimum = 0.01, maximum = 100000.0)]
    rate: Option<f64>,
}

/// Longest `older_than_secs` taken: a century.
const MAX_AGE_SECS: u64 = 100 * 365 * 86_400;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    #[serde(default)]
    ids: Vec<Uuid>,
    #[serde(default)]
    filter: FilterBody,
    /// Only letters dead for longer than this many seconds.
    #[serde(default, deserialize_with = "whole")]
    #[schema(nullable = false, minimum = 0, maximum = 3153600000_u64)]
    older_than_secs: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

/// List dead letters, newest first.
#[utoipa::path(get, path = "/dead-letters", params(DeadQuery, ListParams),
    responses((status = 200, body = [DeadLetterView]), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_dead(
    _: Authorized<Read>,
    State(s): Shared,
    Query(query): Query<DeadQuery>,
    Query(list): Query<ListParams>,
) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    let letters = s
        .ops
        .list_dead(&query, list.all.unwrap_or(false), list.limit.unwrap_or(50))
        .await?;
    Ok(Json(letters))
}

/// Pending dead letters counted by provider and reason.
#[utoipa::path(get, path = "/dead-letters/stats", params(DeadQuery),
    responses((status = 200, body = [StatView]), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn dead_stats(
    _: Authorized<Read>,
    State(s): Shared,
    Query(query): Query<DeadQuery>,
) -> Result<Json<Vec<StatView>>, ApiError> {
    Ok(Json(s.ops.dead_stats(&query).await?))
}

/// One dead letter and its job's attempts.
#[utoipa::path(get, path = "/dead-letters/{id}", params(("id" = Uuid, Path, description = "Dead letter id")),
    responses((status = 200, body = DeadLetterDetail), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn show_dead(
    _: Authorized<Read>,
    State(s): Shared,
    Path(id): Path<Uuid>,
) -> Result<Json<DeadLetterDetail>, ApiError> {
    Ok(Json(s.ops.dead_letter(id).await?))
}

/// Requeue dead letters, each exactly once, optionally patching the payload.
#[utoipa::path(post, path = "/dead-letters/requeue", request_body = RequeueRequest,
    responses((status = 200, body = ActionResult), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"), (status = 408, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn requeue(
    Authorized(actor, _): Authorized<Requeue>,
    State(s): Shared,
    Object(req): Object<RequeueRequest>,
) -> Result<Json<ActionResult>, ApiError> {
    let requeue = courier_ops::Requeue {
        ids: req.ids,
        query: req.filter.into(),
        patch: req.patch,
        rate: req.rate,
    };
    if req.dry_run {
        return Ok(Json(s.ops.preview_requeue(&requeue).await?));
    }
    let actor = format!("api:{actor}");
    detached(s, move |s| async move {
        s.ops.requeue(requeue, &actor, |_| {}).await
    })
    .await
}

/// Runs an action to its end in a task of its own: a client that goes away
/// (or times out) does not stop a requeue half-way through its audit.
async fn detached<F, Fut>(s: Arc<AdminState>, action: F) -> Result<Json<ActionResult>, ApiError>
where
    F: FnOnce(Arc<AdminState>) -> Fut,
    Fut: std::future::Future<Output = Result<ActionResult, courier_ops::OpsError>> + Send + 'static,
{
    let result = tokio::spawn(action(s))
        .await
        .map_err(|e| ApiError::Internal(format!("the action stopped: {e}")))??;
    Ok(Json(result))
}

/// Purge dead letters: a recorded decision, never a delete.
#[utoipa::path(post, path = "/dead-letters/purge", request_body = PurgeRequest,
    responses((status = 200, body = ActionResult), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"), (status = 408, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn purge(
    Authorized(actor, _): Authorized<Purge>,
    State(s): Shared,
    Object(req): Object<PurgeRequest>,
) -> Result<Json<ActionResult>, ApiError> {
    if req.older_than_secs.is_some_and(|secs| secs > MAX_AGE_SECS) {
        return Err(ApiError::BadRequest(format!(
            "older_than_secs: at most {MAX_AGE_SECS} (a century)"
        )));
    }
    let purge = courier_ops::Purge {
        ids: req.ids,
        query: req.filter.into(),
        older_than: req.older_than_secs.map(std::time::Duration::from_secs),
    };
    if req.dry_run {
        return Ok(Json(s.ops.preview_purge(&purge).await?));
    }
    let actor = format!("api:{actor}");
    detached(s, move |s| async move { s.ops.purge(purge, &actor).await }).await
}

/// A job, dead or alive, with its attempts, dead letters and operator actions.
#[utoipa::path(get, path = "/jobs/{id}", params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, body = JobTimeline), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn show_job(
    _: Authorized<Read>,
    State(s): Shared,
    Path(id): Path<Uuid>,
) -> Result<Json<JobTimeline>, ApiError> {
    Ok(Json(s.ops.job(id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindParams {
    /// The idempotency key the job carried.
    #[param(min_length = 1)]
    idempotency_key: String,
    /// Most jobs returned (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Jobs carrying an idempotency key.
#[utoipa::path(get, path = "/jobs", params(FindParams),
    responses((status = 200, body = [JobView]), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn find_jobs(
    _: Authorized<Read>,
    State(s): Shared,
    Query(p): Query<FindParams>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    Ok(Json(
        s.ops
            .find_jobs(&p.idempotency_key, p.limit.unwrap_or(100))
            .await?,
    ))
}

/// Who the presented token is: what the console shows and which of its
/// buttons it offers.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The token's configured name (recorded as the actor of its actions).
    pub token: String,
    /// read, requeue, purge and pause: what it may do.
    pub scopes: Vec<String>,
}

/// The presented token's name and scopes (any valid token may ask).
#[utoipa::path(get, path = "/me",
    responses((status = 200, body = SessionView), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn whoami(caller: Caller) -> Json<SessionView> {
    Json(SessionView {
        token: caller.name,
        scopes: caller
            .scopes
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActionParams {
    /// Most actions returned (default 50, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only actions older than this one (its id): the next page.
    before: Option<Uuid>,
}

/// The audit log: every operator action, newest first.
#[utoipa::path(get, path = "/actions", params(ActionParams),
    responses((status = 200, body = [ActionView]), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_actions(
    _: Authorized<Read>,
    State(s): Shared,
    Query(p): Query<ActionParams>,
) -> Result<Json<Vec<ActionView>>, ApiError> {
    Ok(Json(s.ops.actions(p.limit.unwrap_or(50), p.before).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventListParams {
    /// Most events returned (default 50, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only events older than this one (its id): the next page.
    before: Option<Uuid>,
}

/// The webhook event log: recorded events, newest first.
#[utoipa::path(get, path = "/events", params(EventQuery, EventListParams),
    responses((status = 200, body = [EventView]), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_events(
    _: Authorized<Read>,
    State(s): Shared,
    Query(query): Query<EventQuery>,
    Query(list): Query<EventListParams>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    Ok(Json(
        s.ops
            .list_events(&query, list.limit.unwrap_or(50), list.before)
            .await?,
    ))
}

/// One event: its headers and body, the job it became, its replays.
#[utoipa::path(get, path = "/events/{id}", params(("id" = Uuid, Path, description = "Event id")),
    responses((status = 200, body = EventDetail), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn show_event(
    _: Authorized<Read>,
    State(s): Shared,
    Path(id): Path<Uuid>,
) -> Result<Json<EventDetail>, ApiError> {
    Ok(Json(s.ops.show_event(id).await?))
}

/// Which events, as a JSON body: the query's fields (see `GET /events`),
/// each absent or a value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventFilterBody {
    /// The source that sent it.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, min_length = 1)]
    source: Option<String>,
    /// The sender's id for it.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false, min_length = 1)]
    event_id: Option<String>,
    /// Received at or after.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    since: Option<DateTime<Utc>>,
    /// Received before.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    until: Option<DateTime<Utc>>,
}

impl From<EventFilterBody> for EventQuery {
    fn from(f: EventFilterBody) -> Self {
        EventQuery {
            source: f.source,
            event_id: f.event_id,
            since: f.since,
            until: f.until,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Event ids; with a filter, both must match.
    #[serde(default)]
    ids: Vec<Uuid>,
    #[serde(default)]
    filter: EventFilterBody,
    /// Every event (a filter still narrows): needed when neither ids nor a
    /// filter are given.
    #[serde(default)]
    all: bool,
    /// Count and list, change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Replay events: one audited action enqueues each matching event once, as
/// a new job (new id, idempotency key `<source>:<event id>:replay:<action
/// id>`). Events received after it begins are left out.
#[utoipa::path(post, path = "/events/replay", request_body = ReplayRequest,
    responses((status = 200, body = ActionResult), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"), (status = 408, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn replay_events(
    Authorized(actor, _): Authorized<Requeue>,
    State(s): Shared,
    Object(req): Object<ReplayRequest>,
) -> Result<Json<ActionResult>, ApiError> {
    let replay = courier_ops::Replay {
        ids: req.ids,
        query: req.filter.into(),
        all: req.all,
    };
    if req.dry_run {
        return Ok(Json(s.ops.preview_replay(&replay).await?));
    }
    let actor = format!("api:{actor}");
    detached(s, move |s| async move {
        s.ops.replay_events(replay, &actor, |_| {}).await
    })
    .await
}

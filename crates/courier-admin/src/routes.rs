//! The routes and their OpenAPI description.
//!
//! Owns request and response shapes and the mapping to store queries and
//! recovery actions. Each handler's first argument is its [`Authorized`]
//! caller (axum extracts in order: nothing else is parsed for a caller who
//! fails), and every filter is validated before it reaches the store.

use crate::AdminState;
use crate::auth::{Authorized, Pause, Purge, Read, Requeue};
use crate::error::{ApiError, ErrorBody};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use courier_store::{DeadFilter, DeadLetterRecord, JobRecord};
use courier_worker::recovery::{self, ActionReport, RequeueOptions};
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
        description = "Find, inspect, requeue and purge failed jobs; see, pause and resume providers. Bearer tokens carry scopes: read, requeue, purge, pause."
    ),
    paths(list_dead, dead_stats, show_dead, requeue, purge, show_job, find_jobs,
          crate::providers::list_providers, crate::providers::pause_provider, crate::providers::resume_provider),
    components(schemas(ErrorBody, DeadLetterView, StatView, JobView, AttemptView, ActionView, JobTimeline,
                       RequeueRequest, PurgeRequest, FilterBody, ActionResult,
                       crate::providers::ProviderView, crate::providers::RateLimitView, crate::providers::HoldView,
                       crate::providers::PauseRequest, crate::providers::HoldResult)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

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
        .route("/dead-letters", get(list_dead))
        .route("/dead-letters/stats", get(dead_stats))
        .route("/dead-letters/{id}", get(show_dead))
        .route("/jobs", get(find_jobs))
        .route("/jobs/{id}", get(show_job))
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
        .merge(requeue_route)
        .merge(purge_route)
        .merge(pause_routes)
        .with_state(state)
}

async fn openapi_document() -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "application/json")],
        crate::openapi_json(),
    )
}

/// Which dead letters: every field narrows the match.
#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct FilterBody {
    provider: Option<String>,
    operation: Option<String>,
    /// permanent, retries_exhausted, invalid or delivery_limit
    reason: Option<String>,
    /// Last HTTP status.
    status: Option<i16>,
    /// Dead at or after.
    since: Option<DateTime<Utc>>,
    /// Dead before.
    until: Option<DateTime<Utc>>,
    /// Text in the reason detail or the last error.
    search: Option<String>,
}

impl FilterBody {
    /// The filter, or a 400 naming the field that makes no sense.
    fn into_filter(self, ids: Vec<Uuid>) -> Result<DeadFilter, ApiError> {
        let filter = DeadFilter {
            ids,
            provider: self.provider,
            operation: self.operation,
            reason: self.reason,
            last_status: self.status,
            since: self.since,
            until: self.until,
            text: self.search,
        };
        filter.check().map_err(ApiError::BadRequest)?;
        Ok(filter)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Most letters returned (default 50, at most 1000).
    limit: Option<i64>,
    /// Include requeued and purged letters.
    all: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    id: Uuid,
    job_id: Option<Uuid>,
    provider: Option<String>,
    operation: Option<String>,
    reason: String,
    detail: String,
    attempts: i32,
    last_status: Option<i16>,
    last_error: Option<String>,
    dead_at: DateTime<Utc>,
    /// pending, requeueing, requeued or purged
    status: String,
    /// The operator action that settled it.
    action_id: Option<Uuid>,
    /// The original job (as a string when it was not JSON).
    job: Value,
}

impl From<&DeadLetterRecord> for DeadLetterView {
    fn from(l: &DeadLetterRecord) -> Self {
        DeadLetterView {
            id: l.id,
            job_id: l.job_id,
            provider: l.provider.clone(),
            operation: l.operation.clone(),
            reason: l.reason.clone(),
            detail: l.detail.clone(),
            attempts: l.attempts,
            last_status: l.last_status,
            last_error: l.last_error.clone(),
            dead_at: l.dead_at,
            status: l.status.clone(),
            action_id: l.action_id,
            job: serde_json::from_slice(&l.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&l.body).into_owned())),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatView {
    provider: Option<String>,
    reason: String,
    pending: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    id: Uuid,
    provider: String,
    operation: String,
    idempotency_key: String,
    /// queued, retrying, succeeded or dead
    state: String,
    attempts: i32,
    generation: i32,
    last_status: Option<i16>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

impl From<&JobRecord> for JobView {
    fn from(j: &JobRecord) -> Self {
        JobView {
            id: j.id,
            provider: j.provider.clone(),
            operation: j.operation.clone(),
            idempotency_key: j.idempotency_key.clone(),
            state: j.state.clone(),
            attempts: j.attempts,
            generation: j.generation,
            last_status: j.last_status,
            last_error: j.last_error.clone(),
            created_at: j.created_at,
            updated_at: j.updated_at,
            finished_at: j.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    attempt: i32,
    started_at: DateTime<Utc>,
    duration_us: i64,
    http_status: Option<i16>,
    error_class: String,
    error: Option<String>,
    /// The W3C trace id the provider request carried.
    trace_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActionView {
    id: Uuid,
    actor: String,
    /// requeue or purge
    action: String,
    filter: Value,
    patch: Option<Value>,
    matched: i32,
    affected: i32,
    started_at: DateTime<Utc>,
}

/// A job with everything that happened to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobTimeline {
    job: JobView,
    attempts: Vec<AttemptView>,
    dead_letters: Vec<DeadLetterView>,
    operator_actions: Vec<ActionView>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequeueRequest {
    /// Dead letter ids; with a filter, both must match.
    #[serde(default)]
    ids: Vec<Uuid>,
    #[serde(default)]
    filter: FilterBody,
    /// JSON merge patch applied to each job's payload.
    patch: Option<Value>,
    /// Count and list, change nothing.
    #[serde(default)]
    dry_run: bool,
    /// Most jobs republished per second.
    rate: Option<f64>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PurgeRequest {
    #[serde(default)]
    ids: Vec<Uuid>,
    #[serde(default)]
    filter: FilterBody,
    /// Only letters dead for longer than this many seconds.
    older_than_secs: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActionResult {
    /// The audit record; absent on a dry run.
    action_id: Option<Uuid>,
    dry_run: bool,
    /// Pending letters matching.
    matched: i64,
    /// Letters requeued or purged by this call.
    affected: u64,
    /// Up to 20 of the matching letters (dry run only).
    sample: Vec<Uuid>,
}

impl From<ActionReport> for ActionResult {
    fn from(report: ActionReport) -> Self {
        ActionResult {
            action_id: Some(report.action),
            dry_run: false,
            matched: report.matched,
            affected: report.affected,
            sample: Vec::new(),
        }
    }
}

fn limit_of(p: &ListParams) -> i64 {
    p.limit.unwrap_or(50).clamp(1, 1000)
}

fn refuse_everything(ids: &[Uuid], filter: &DeadFilter) -> Result<(), ApiError> {
    if ids.is_empty() && *filter == DeadFilter::default() {
        return Err(ApiError::BadRequest(
            "say which letters: give ids or at least one filter".into(),
        ));
    }
    Ok(())
}

/// List dead letters, newest first.
#[utoipa::path(get, path = "/dead-letters", params(FilterBody, ListParams),
    responses((status = 200, body = [DeadLetterView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_dead(
    _: Authorized<Read>,
    State(s): Shared,
    Query(filter): Query<FilterBody>,
    Query(list): Query<ListParams>,
) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    let statuses: &[&str] = if list.all.unwrap_or(false) {
        &["pending", "requeueing", "requeued", "purged"]
    } else {
        &["pending"]
    };
    let letters = s
        .store
        .list_dead(&filter.into_filter(Vec::new())?, statuses, limit_of(&list))
        .await?;
    Ok(Json(letters.iter().map(DeadLetterView::from).collect()))
}

/// Pending dead letters counted by provider and reason.
#[utoipa::path(get, path = "/dead-letters/stats", params(FilterBody),
    responses((status = 200, body = [StatView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn dead_stats(
    _: Authorized<Read>,
    State(s): Shared,
    Query(filter): Query<FilterBody>,
) -> Result<Json<Vec<StatView>>, ApiError> {
    let stats = s.store.dead_stats(&filter.into_filter(Vec::new())?).await?;
    Ok(Json(
        stats
            .into_iter()
            .map(|st| StatView {
                provider: st.provider,
                reason: st.reason,
                pending: st.count,
            })
            .collect(),
    ))
}

/// One dead letter.
#[utoipa::path(get, path = "/dead-letters/{id}", params(("id" = Uuid, Path, description = "Dead letter id")),
    responses((status = 200, body = DeadLetterView), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn show_dead(
    _: Authorized<Read>,
    State(s): Shared,
    Path(id): Path<Uuid>,
) -> Result<Json<DeadLetterView>, ApiError> {
    let letter = s.store.dead_letter(id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(DeadLetterView::from(&letter)))
}

/// Requeue dead letters, each exactly once, optionally patching the payload.
#[utoipa::path(post, path = "/dead-letters/requeue", request_body = RequeueRequest,
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
async fn requeue(
    Authorized(actor, _): Authorized<Requeue>,
    State(s): Shared,
    Json(req): Json<RequeueRequest>,
) -> Result<Json<ActionResult>, ApiError> {
    let filter = req.filter.into_filter(req.ids.clone())?;
    refuse_everything(&req.ids, &filter)?;
    if let Some(rate) = req.rate
        && !(MIN_RATE..=MAX_RATE).contains(&rate)
    {
        return Err(ApiError::BadRequest(format!(
            "rate: must be between {MIN_RATE} and {MAX_RATE} letters per second"
        )));
    }
    if let Some(patch) = &req.patch
        && !patch.is_object()
    {
        return Err(ApiError::BadRequest(
            "patch must be a JSON object (a merge patch for the payload)".into(),
        ));
    }
    if req.dry_run {
        return dry_run(&s, &filter).await;
    }
    let options = RequeueOptions {
        actor: format!("api:{actor}"),
        patch: req.patch,
        rate: req.rate,
        batch: 500,
        max_body_bytes: s.max_body_bytes,
    };
    let report = detached(s.clone(), move |s| async move {
        let report = recovery::requeue(
            &s.store,
            &s.publisher,
            &s.topology,
            &filter,
            &options,
            |_| {},
        )
        .await?;
        sync_queues(&s, &filter).await;
        Ok(report)
    })
    .await?;
    Ok(Json(ActionResult::from(report)))
}

/// Slowest and fastest requeue rates accepted, in letters per second.
const MIN_RATE: f64 = 0.01;
const MAX_RATE: f64 = 100_000.0;

/// Runs an action to its end in a task of its own: a client that goes away
/// (or times out) does not stop a requeue half-way through its audit.
async fn detached<F, Fut>(s: Arc<AdminState>, action: F) -> Result<ActionReport, ApiError>
where
    F: FnOnce(Arc<AdminState>) -> Fut,
    Fut: std::future::Future<Output = Result<ActionReport, ApiError>> + Send + 'static,
{
    tokio::spawn(action(s))
        .await
        .map_err(|e| ApiError::Internal(format!("the action stopped: {e}")))?
}

/// Purge dead letters: a recorded decision, never a delete.
#[utoipa::path(post, path = "/dead-letters/purge", request_body = PurgeRequest,
    responses((status = 200, body = ActionResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
async fn purge(
    Authorized(actor, _): Authorized<Purge>,
    State(s): Shared,
    Json(req): Json<PurgeRequest>,
) -> Result<Json<ActionResult>, ApiError> {
    let mut filter = req.filter.into_filter(req.ids.clone())?;
    if let Some(secs) = req.older_than_secs {
        let cutoff = i64::try_from(secs)
            .ok()
            .and_then(chrono::TimeDelta::try_seconds)
            .and_then(|age| Utc::now().checked_sub_signed(age))
            .ok_or_else(|| {
                ApiError::BadRequest("older_than_secs: further back than time goes".into())
            })?;
        filter.until = Some(filter.until.map_or(cutoff, |u| u.min(cutoff)));
    }
    refuse_everything(&req.ids, &filter)?;
    if req.dry_run {
        return dry_run(&s, &filter).await;
    }
    let actor = format!("api:{actor}");
    let report = detached(s.clone(), move |s| async move {
        let report = recovery::purge(&s.store, &filter, &actor).await?;
        sync_queues(&s, &filter).await;
        Ok(report)
    })
    .await?;
    Ok(Json(ActionResult::from(report)))
}

async fn dry_run(s: &AdminState, filter: &DeadFilter) -> Result<Json<ActionResult>, ApiError> {
    let matched = s.store.count_pending(filter).await?;
    let sample = s.store.list_dead(filter, &["pending"], 20).await?;
    Ok(Json(ActionResult {
        action_id: None,
        dry_run: true,
        matched,
        affected: 0,
        sample: sample.iter().map(|l| l.id).collect(),
    }))
}

/// Removes settled letters from the RabbitMQ dead-letter queues; a failure
/// here leaves extra messages, never lost ones, so it is logged, not returned.
async fn sync_queues(s: &AdminState, filter: &DeadFilter) {
    if let Err(e) =
        recovery::sync_affected_queues(&s.store, &s.link, &s.publisher, &s.topology, filter).await
    {
        tracing::warn!(error = %e, "syncing the dead-letter queues failed");
    }
}

/// A job, dead or alive, with its attempts, dead letters and operator actions.
#[utoipa::path(get, path = "/jobs/{id}", params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, body = JobTimeline), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn show_job(
    _: Authorized<Read>,
    State(s): Shared,
    Path(id): Path<Uuid>,
) -> Result<Json<JobTimeline>, ApiError> {
    let job = s.store.job(id).await?.ok_or(ApiError::NotFound)?;
    let attempts = s.store.attempts(id).await?;
    let letters = s.store.dead_letters_of(id).await?;
    let actions = s.store.actions_of(id).await?;
    Ok(Json(JobTimeline {
        job: JobView::from(&job),
        attempts: attempts
            .into_iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                started_at: a.started_at,
                duration_us: a.duration_us,
                http_status: a.http_status,
                error_class: a.error_class,
                error: a.error,
                trace_id: a.trace_id,
            })
            .collect(),
        dead_letters: letters.iter().map(DeadLetterView::from).collect(),
        operator_actions: actions
            .into_iter()
            .map(|a| ActionView {
                id: a.id,
                actor: a.actor,
                action: a.action,
                filter: a.filter,
                patch: a.patch,
                matched: a.matched,
                affected: a.affected,
                started_at: a.started_at,
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FindParams {
    /// The idempotency key the job carried.
    idempotency_key: String,
    /// Most jobs returned (default 100, at most 1000).
    limit: Option<i64>,
}

/// Jobs carrying an idempotency key.
#[utoipa::path(get, path = "/jobs", params(FindParams),
    responses((status = 200, body = [JobView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn find_jobs(
    _: Authorized<Read>,
    State(s): Shared,
    Query(p): Query<FindParams>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    if p.idempotency_key.is_empty() {
        return Err(ApiError::BadRequest(
            "idempotency_key: must not be empty".into(),
        ));
    }
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let jobs = s.store.jobs_by_key(&p.idempotency_key, limit).await?;
    Ok(Json(jobs.iter().map(JobView::from).collect()))
}

//! The gRPC services of the runtime: `spec.proto.runtime.v1.Runtime` and `Lifecycle`. Each API
//! lives in its own module; this one only routes each RPC there.

// Handlers return tonic's `Status`, the error type of every generated service method; boxing it
// in each helper would only add conversions.
#![allow(clippy::result_large_err)]

pub mod binding;
pub mod callback;
pub mod configuration;
pub mod file;
pub mod hello;
pub mod invoke;
pub mod lock;
pub mod pubsub;
pub mod secret;
pub mod sequencer;
pub mod state;
pub mod status;

use std::sync::{Arc, Weak};

use tonic::{async_trait, Request, Response, Status, Streaming};

use crate::runtime::components::registry::Components;
use crate::runtime::config::RpcConfig;
use crate::runtime::proto::rt;
use crate::server::State;

/// What every API handler reads: the components, service invocation settings, caches.
pub struct Shared {
    /// The runtime's components.
    pub components: Arc<Components>,
    /// Service invocation (`rpcs`), if configured.
    pub rpc: Option<RpcConfig>,
    /// The proxy (for InvokeService's egress listener).
    pub state: Weak<State>,
    /// HTTP client for InvokeService.
    pub http: invoke::HttpClient,
    /// WEAK sequencer segments.
    pub segments: sequencer::SegmentCache,
}

/// The `Runtime` and `Lifecycle` gRPC services (cheap to clone).
#[derive(Clone)]
pub struct RuntimeApi(pub Arc<Shared>);

type Rsp<T> = Result<Response<T>, Status>;

fn ok<T>(r: Result<T, Status>) -> Rsp<T> {
    r.map(Response::new)
}

#[async_trait]
impl rt::runtime_server::Runtime for RuntimeApi {
    async fn say_hello(&self, r: Request<rt::SayHelloRequest>) -> Rsp<rt::SayHelloResponse> {
        ok(hello::say_hello(&self.0, r.into_inner()))
    }

    async fn invoke_service(
        &self,
        r: Request<rt::InvokeServiceRequest>,
    ) -> Rsp<rt::InvokeResponse> {
        let (meta, _, req) = r.into_parts();
        let (body, headers) = invoke::invoke(&self.0, meta, req).await?;
        let mut resp = Response::new(body);
        *resp.metadata_mut() = headers;
        Ok(resp)
    }

    async fn get_configuration(
        &self,
        r: Request<rt::GetConfigurationRequest>,
    ) -> Rsp<rt::GetConfigurationResponse> {
        ok(configuration::get(&self.0, r.into_inner()).await)
    }

    async fn save_configuration(&self, r: Request<rt::SaveConfigurationRequest>) -> Rsp<()> {
        ok(configuration::save(&self.0, r.into_inner()).await)
    }

    async fn delete_configuration(&self, r: Request<rt::DeleteConfigurationRequest>) -> Rsp<()> {
        ok(configuration::delete(&self.0, r.into_inner()).await)
    }

    type SubscribeConfigurationStream = configuration::ConfigStream;

    async fn subscribe_configuration(
        &self,
        r: Request<Streaming<rt::SubscribeConfigurationRequest>>,
    ) -> Rsp<Self::SubscribeConfigurationStream> {
        ok(configuration::subscribe(&self.0, r.into_inner()).await)
    }

    async fn try_lock(&self, r: Request<rt::TryLockRequest>) -> Rsp<rt::TryLockResponse> {
        ok(lock::try_lock(&self.0, r.into_inner()).await)
    }

    async fn unlock(&self, r: Request<rt::UnlockRequest>) -> Rsp<rt::UnlockResponse> {
        ok(lock::unlock(&self.0, r.into_inner()).await)
    }

    async fn lock_keep_alive(
        &self,
        r: Request<rt::LockKeepAliveRequest>,
    ) -> Rsp<rt::LockKeepAliveResponse> {
        ok(lock::keep_alive(&self.0, r.into_inner()).await)
    }

    async fn get_next_id(&self, r: Request<rt::GetNextIdRequest>) -> Rsp<rt::GetNextIdResponse> {
        ok(sequencer::next_id(&self.0, r.into_inner()).await)
    }

    async fn get_state(&self, r: Request<rt::GetStateRequest>) -> Rsp<rt::GetStateResponse> {
        ok(state::get(&self.0, r.into_inner()).await)
    }

    async fn get_bulk_state(
        &self,
        r: Request<rt::GetBulkStateRequest>,
    ) -> Rsp<rt::GetBulkStateResponse> {
        ok(state::get_bulk(&self.0, r.into_inner()).await)
    }

    async fn save_state(&self, r: Request<rt::SaveStateRequest>) -> Rsp<()> {
        ok(state::save(&self.0, r.into_inner()).await)
    }

    async fn delete_state(&self, r: Request<rt::DeleteStateRequest>) -> Rsp<()> {
        ok(state::delete_one(&self.0, r.into_inner()).await)
    }

    async fn delete_bulk_state(&self, r: Request<rt::DeleteBulkStateRequest>) -> Rsp<()> {
        ok(state::delete_bulk(&self.0, r.into_inner()).await)
    }

    async fn execute_state_transaction(
        &self,
        r: Request<rt::ExecuteStateTransactionRequest>,
    ) -> Rsp<()> {
        ok(state::transact(&self.0, r.into_inner()).await)
    }

    async fn publish_event(&self, r: Request<rt::PublishEventRequest>) -> Rsp<()> {
        ok(pubsub::publish(&self.0, r.into_inner()).await)
    }

    type SubscribeTopicEventsStream = pubsub::EventStream;

    async fn subscribe_topic_events(
        &self,
        r: Request<Streaming<rt::SubscribeTopicEventsRequest>>,
    ) -> Rsp<Self::SubscribeTopicEventsStream> {
        ok(pubsub::subscribe_stream(&self.0, r.into_inner()).await)
    }

    type GetFileStream = file::FileStream;

    async fn get_file(&self, r: Request<rt::GetFileRequest>) -> Rsp<Self::GetFileStream> {
        ok(file::get(&self.0, r.into_inner()).await)
    }

    async fn put_file(&self, r: Request<Streaming<rt::PutFileRequest>>) -> Rsp<()> {
        ok(file::put(&self.0, r.into_inner()).await)
    }

    async fn list_file(&self, r: Request<rt::ListFileRequest>) -> Rsp<rt::ListFileResp> {
        ok(file::list(&self.0, r.into_inner()).await)
    }

    async fn del_file(&self, r: Request<rt::DelFileRequest>) -> Rsp<()> {
        ok(file::delete(&self.0, r.into_inner()).await)
    }

    async fn get_file_meta(
        &self,
        r: Request<rt::GetFileMetaRequest>,
    ) -> Rsp<rt::GetFileMetaResponse> {
        ok(file::meta(&self.0, r.into_inner()).await)
    }

    async fn invoke_binding(
        &self,
        r: Request<rt::InvokeBindingRequest>,
    ) -> Rsp<rt::InvokeBindingResponse> {
        ok(binding::invoke(&self.0, r.into_inner()).await)
    }

    async fn get_secret(&self, r: Request<rt::GetSecretRequest>) -> Rsp<rt::GetSecretResponse> {
        ok(secret::get(&self.0, r.into_inner()))
    }

    async fn get_bulk_secret(
        &self,
        r: Request<rt::GetBulkSecretRequest>,
    ) -> Rsp<rt::GetBulkSecretResponse> {
        ok(secret::bulk(&self.0, r.into_inner()))
    }
}

#[async_trait]
impl rt::lifecycle_server::Lifecycle for RuntimeApi {
    async fn apply_configuration(
        &self,
        r: Request<rt::DynamicConfiguration>,
    ) -> Rsp<rt::ApplyConfigurationResponse> {
        ok(hello::apply(&self.0, r.into_inner()))
    }
}

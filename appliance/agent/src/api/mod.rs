//! The agent's gRPC service. It authorizes the caller, validates, persists specs through the
//! reconciler and reads the statuses the reconciler recorded; it never calls engines, storage or
//! processes itself. Mutual TLS is enforced by the server ([`tls`]): only clients with a
//! certificate chaining to the deployment CA get here; [`authorize`] then decides per call from
//! the role the certificate carries.

pub mod authorize;
pub mod tls;

use crate::host;
use crate::pki::identity::{Identities, Role};
use crate::pki::renewal;
use crate::reconcile::{ApplyError, Reconciler};
use crate::store::{ConfigurationStore, PutError};
use authorize::Call;
use ferrymq_api::agent::agent_server::Agent;
use ferrymq_api::agent::{
    ApplyBrokerRequest, ApplyBrokerUserRequest, BrokerStatus, BrokerUserStatus,
    ConfigurationRevision, DeleteBrokerRequest, DeleteBrokerResponse, DeleteBrokerUserRequest,
    DeleteBrokerUserResponse, DeleteConfigurationRequest, DeleteConfigurationResponse,
    GetBrokerRequest, GetBrokerUserRequest, GetConfigurationRequest, GetHostCertificatesRequest,
    GetHostFactsRequest, HostCertificates, HostFacts, PutConfigurationRequest, RebootBrokerRequest,
};
use std::path::PathBuf;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AgentService {
    reconciler: Arc<Reconciler>,
    supervisor_kind: &'static str,
    configurations: Arc<ConfigurationStore>,
    identities: Identities,
    tls_dir: PathBuf,
    certificate: Arc<crate::tls::AgentCertificate>,
}

impl AgentService {
    pub fn new(
        reconciler: Arc<Reconciler>,
        supervisor_kind: &'static str,
        configurations: Arc<ConfigurationStore>,
        identities: Identities,
        tls_dir: PathBuf,
        certificate: Arc<crate::tls::AgentCertificate>,
    ) -> Self {
        AgentService {
            reconciler,
            supervisor_kind,
            configurations,
            identities,
            tls_dir,
            certificate,
        }
    }

    /// The caller's role, if it may make `call`; PERMISSION_DENIED (logged) otherwise.
    fn authorize<T>(&self, req: &Request<T>, call: Call<'_>) -> Result<Role, Status> {
        let certs = req.peer_certs();
        let denied = |why: String| {
            tracing::warn!(peer = ?req.remote_addr(), "refused {call}: {why}");
            Status::permission_denied(why)
        };
        let role = self
            .identities
            .role(certs.as_deref().map(Vec::as_slice))
            .map_err(|e| denied(e.to_string()))?;
        let spec = match call {
            Call::BrokerStatus { broker_id } if role != Role::Operator => self
                .reconciler
                .status(broker_id)
                .and_then(|s| s.spec)
                .or_else(|| self.reconciler.knows(broker_id).ok().flatten()),
            _ => None,
        };
        authorize::permits(&role, call, spec.as_ref()).map_err(denied)?;
        Ok(role)
    }
}

fn refused(e: ApplyError) -> Status {
    match e {
        ApplyError::Invalid(errors) => Status::invalid_argument(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        ApplyError::Conflict(msg) => Status::failed_precondition(msg),
        ApplyError::NotFound(msg) => Status::not_found(msg),
        ApplyError::Internal(e) => internal(e),
    }
}

fn internal(e: anyhow::Error) -> Status {
    tracing::error!("{e:#}");
    Status::internal(format!("{e:#}"))
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_host_facts(
        &self,
        req: Request<GetHostFactsRequest>,
    ) -> Result<Response<HostFacts>, Status> {
        self.authorize(&req, Call::Operator("GetHostFacts"))?;
        let kind = self.supervisor_kind;
        let tls_dir = self.tls_dir.clone();
        tokio::task::spawn_blocking(move || {
            host::facts(kind).map(|mut facts| {
                facts.certificates = Some(renewal::ends(&tls_dir));
                facts
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map(Response::new)
        .map_err(internal)
    }

    async fn apply_broker(
        &self,
        req: Request<ApplyBrokerRequest>,
    ) -> Result<Response<BrokerStatus>, Status> {
        self.authorize(&req, Call::Operator("ApplyBroker"))?;
        let spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        self.reconciler
            .apply(spec)
            .await
            .map(Response::new)
            .map_err(refused)
    }

    async fn reboot_broker(
        &self,
        req: Request<RebootBrokerRequest>,
    ) -> Result<Response<BrokerStatus>, Status> {
        self.authorize(&req, Call::Operator("RebootBroker"))?;
        let req = req.into_inner();
        ferrymq_api::validate::broker_id(&req.broker_id).map_err(Status::invalid_argument)?;
        self.reconciler
            .reboot(&req.broker_id, &req.reboot_id)
            .await
            .map(Response::new)
            .map_err(refused)
    }

    async fn get_broker(
        &self,
        req: Request<GetBrokerRequest>,
    ) -> Result<Response<BrokerStatus>, Status> {
        self.authorize(
            &req,
            Call::BrokerStatus {
                broker_id: &req.get_ref().broker_id,
            },
        )?;
        let id = req.into_inner().broker_id;
        if let Some(status) = self.reconciler.status(&id) {
            return Ok(Response::new(status));
        }
        match self.reconciler.knows(&id).map_err(internal)? {
            Some(spec) => Ok(Response::new(crate::reconcile::pending_status(&spec))),
            None => Err(Status::not_found(format!("no broker {id} on this host"))),
        }
    }

    async fn delete_broker(
        &self,
        req: Request<DeleteBrokerRequest>,
    ) -> Result<Response<DeleteBrokerResponse>, Status> {
        self.authorize(&req, Call::Operator("DeleteBroker"))?;
        let id = req.into_inner().broker_id;
        ferrymq_api::validate::broker_id(&id).map_err(Status::invalid_argument)?;
        let existed = self.reconciler.delete(&id).await.map_err(internal)?;
        Ok(Response::new(DeleteBrokerResponse { existed }))
    }

    async fn apply_broker_user(
        &self,
        req: Request<ApplyBrokerUserRequest>,
    ) -> Result<Response<BrokerUserStatus>, Status> {
        self.authorize(&req, Call::Operator("ApplyBrokerUser"))?;
        let req = req.into_inner();
        ferrymq_api::validate::broker_id(&req.broker_id).map_err(Status::invalid_argument)?;
        let user = req
            .user
            .ok_or_else(|| Status::invalid_argument("user is required"))?;
        self.reconciler
            .apply_user(&req.broker_id, user)
            .await
            .map(Response::new)
            .map_err(refused)
    }

    async fn get_broker_user(
        &self,
        req: Request<GetBrokerUserRequest>,
    ) -> Result<Response<BrokerUserStatus>, Status> {
        self.authorize(&req, Call::Operator("GetBrokerUser"))?;
        let req = req.into_inner();
        self.reconciler
            .user(&req.broker_id, &req.username)
            .map(Response::new)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "broker {} on this host has no user {:?}",
                    req.broker_id, req.username
                ))
            })
    }

    async fn delete_broker_user(
        &self,
        req: Request<DeleteBrokerUserRequest>,
    ) -> Result<Response<DeleteBrokerUserResponse>, Status> {
        self.authorize(&req, Call::Operator("DeleteBrokerUser"))?;
        let req = req.into_inner();
        let existed = self
            .reconciler
            .delete_user(&req.broker_id, &req.username)
            .await
            .map_err(internal)?
            .is_some();
        Ok(Response::new(DeleteBrokerUserResponse { existed }))
    }

    async fn put_configuration(
        &self,
        req: Request<PutConfigurationRequest>,
    ) -> Result<Response<ConfigurationRevision>, Status> {
        self.authorize(&req, Call::Operator("PutConfiguration"))?;
        let rev = req
            .into_inner()
            .revision
            .ok_or_else(|| Status::invalid_argument("revision is required"))?;
        let store = self.configurations.clone();
        match tokio::task::spawn_blocking(move || store.put(rev))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
        {
            Ok(stored) => Ok(Response::new(stored)),
            Err(PutError::Invalid(m)) => Err(Status::invalid_argument(m)),
            Err(e @ PutError::Conflict { .. }) => Err(Status::already_exists(e.to_string())),
            Err(PutError::Internal(e)) => Err(internal(e)),
        }
    }

    async fn get_configuration(
        &self,
        req: Request<GetConfigurationRequest>,
    ) -> Result<Response<ConfigurationRevision>, Status> {
        self.authorize(&req, Call::Operator("GetConfiguration"))?;
        let req = req.into_inner();
        match self
            .configurations
            .get(&req.id, req.revision)
            .map_err(Status::invalid_argument)?
        {
            Some(rev) => Ok(Response::new(rev)),
            None if req.revision == 0 => Err(Status::not_found(format!(
                "no configuration {} on this host",
                req.id
            ))),
            None => Err(Status::not_found(format!(
                "no revision {} of configuration {} on this host",
                req.revision, req.id
            ))),
        }
    }

    async fn delete_configuration(
        &self,
        req: Request<DeleteConfigurationRequest>,
    ) -> Result<Response<DeleteConfigurationResponse>, Status> {
        self.authorize(&req, Call::Operator("DeleteConfiguration"))?;
        let existed = self
            .configurations
            .delete(&req.into_inner().id)
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(DeleteConfigurationResponse { existed }))
    }

    async fn get_host_certificates(
        &self,
        req: Request<GetHostCertificatesRequest>,
    ) -> Result<Response<HostCertificates>, Status> {
        self.authorize(&req, Call::Operator("GetHostCertificates"))?;
        renewal::current(&self.tls_dir)
            .map(Response::new)
            .map_err(internal)
    }

    async fn install_host_certificates(
        &self,
        req: Request<HostCertificates>,
    ) -> Result<Response<HostCertificates>, Status> {
        self.authorize(&req, Call::Operator("InstallHostCertificates"))?;
        let new = req.into_inner();
        let tls_dir = self.tls_dir.clone();
        tokio::task::spawn_blocking(move || renewal::install(&tls_dir, &new))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| match e {
                renewal::InstallError::Invalid(m) => Status::invalid_argument(m),
                renewal::InstallError::Internal(e) => internal(e),
            })?;
        // Serve the new agent certificate from the next handshake on, and issue brokers'
        // certificates with the renewed broker CA (they chain to it from now on).
        self.certificate.reload().map_err(internal)?;
        self.reconciler.reload_broker_ca(&self.tls_dir);
        tracing::info!("installed renewed host certificates");
        Ok(Response::new(renewal::ends(&self.tls_dir)))
    }
}

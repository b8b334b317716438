//! The RMM capability: sites (the unit mapped onto portal companies), devices and open
//! alerts, one page at a time, and resolving an alert. Datto RMM and ConnectWise Asio
//! implement it; the sync engine reads it like the PSA sources (opaque page tokens,
//! unreadable records rejected one by one).

use async_trait::async_trait;

use mspbridge_domain::rmm::{DeviceKey, DeviceRefresh, ExtAlert, ExtDevice, ExtSite};

use crate::source::{PageRequest, SourceError, SourcePage};

/// Everything an RMM gives the engine. RMMs have no change feed (Datto has no
/// `modifiedSince`), so `PageRequest::since` is ignored and every pass is a full sweep:
/// content hashes make unchanged records cost nothing, and a complete sweep finds what
/// disappeared.
#[async_trait]
pub trait RmmSource: Send + Sync {
    async fn sites(&self, req: &PageRequest) -> Result<SourcePage<ExtSite>, SourceError>;
    async fn devices(&self, req: &PageRequest) -> Result<SourcePage<ExtDevice>, SourceError>;
    /// Open alerts (resolved ones leave the list; the engine marks an alert it no longer
    /// sees after a complete sweep resolved).
    async fn open_alerts(&self, req: &PageRequest) -> Result<SourcePage<ExtAlert>, SourceError>;
    /// One device read alone, now (the device page's Refresh): online state, patch summary
    /// and the facts the sweep's list does not carry. Not found upstream is
    /// `SourceError::Unavailable` naming the device.
    async fn device_refresh(&self, device: &DeviceKey) -> Result<DeviceRefresh, SourceError>;
    /// Whether [`alert`](Self::alert) reads one alert alone (Datto); where it does not
    /// (Asio, whose alerts are tickets), alerts no longer open stay "no longer open".
    fn reads_single_alerts(&self) -> bool {
        false
    }
    /// One alert as the RMM has it now, once it is no longer listed open (who resolved it
    /// and when); `Ok(None)`: the RMM has no such alert any more.
    async fn alert(&self, _id: &str) -> Result<Option<ExtAlert>, SourceError> {
        Ok(None)
    }
    /// Vendor requests made through this source so far (token requests included).
    fn requests(&self) -> u64;
    /// Response body bytes received so far (0 where not counted).
    fn bytes(&self) -> u64 {
        0
    }
}

/// Why an RMM write failed: transient (retry later) or refused (an admin must act).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RmmWriteError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Refused(String),
}

/// What the portal writes to an RMM: resolving an alert (Datto `POST /v2/alert/{uid}/resolve`).
#[async_trait]
pub trait AlertWriter: Send + Sync {
    /// Idempotent: resolving an alert already resolved succeeds.
    async fn resolve_alert(&self, alert_id: &str) -> Result<(), RmmWriteError>;
}

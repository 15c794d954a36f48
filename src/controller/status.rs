//! Status through the status subresource, by server-side apply with the
//! operator's field manager: the one way every kind's status is written.

use std::fmt::Debug;

use futures::future::BoxFuture;
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{api::FIELD_MANAGER, reconcile::StatusSink};

/// Writes one object's status through the status subresource by server-side
/// apply with the operator's field manager, and only when it changed. One
/// writer lives for one reconcile, so an error report builds on what that
/// reconcile already saved (an allocated VMID is never lost to it).
pub struct StatusWriter<K> {
    api: Api<K>,
    name: String,
    /// As compact JSON: a thousand monitors keep one each, and a
    /// `serde_json::Value` tree is several times the size of its text.
    last: std::sync::Mutex<Option<String>>,
}

impl<K> StatusWriter<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    pub fn new(api: Api<K>, name: String, current: Option<&impl Serialize>) -> Self {
        Self {
            api,
            name,
            last: std::sync::Mutex::new(current.and_then(|c| serde_json::to_string(c).ok())),
        }
    }

    /// The namespaced API of the object's kind.
    pub fn api(&self) -> &Api<K> {
        &self.api
    }

    /// The newest status this writer saved (or started from).
    pub fn latest<S: DeserializeOwned>(&self) -> Option<S> {
        let last = self.last.lock().expect("status lock");
        serde_json::from_str(last.as_deref()?).ok()
    }

    pub async fn apply<S: Serialize>(&self, status: &S) -> Result<(), kube::Error> {
        let text = serde_json::to_string(status).map_err(kube::Error::SerdeError)?;
        if self.last.lock().expect("status lock").as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        let value = serde_json::to_value(status).map_err(kube::Error::SerdeError)?;
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": value,
        });
        self.api
            .patch_status(&self.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
        *self.last.lock().expect("status lock") = Some(text);
        Ok(())
    }
}

impl<K, S> StatusSink<S> for StatusWriter<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync,
    S: Serialize + Sync,
{
    fn save<'a>(&'a self, status: &'a S) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.apply(status).await.map_err(|e| super::api_words::kube_words(&e)) })
    }
}

//! Containers diad keeps: started and stopped through the host (see
//! `host.rs` for what a container is), listed with what is attached to
//! them, and resolved from the ids requests give (a name, or `pid:N`).

use dia::api::{check_name, Container};
use tracing::info;

use crate::error::ApiError;
use crate::manager::Manager;
use crate::state::{ContainerState, VolumeState};

fn attached_to(v: &VolumeState, container: &str) -> bool {
    v.attachment
        .as_ref()
        .is_some_and(|a| a.container == container)
}

impl Manager {
    /// `(pid, registered name)` of a container id: a diad container's
    /// name, or `pid:N` for any process's namespaces.
    pub(crate) fn resolve(&self, id: &str) -> Result<(u32, Option<String>), ApiError> {
        if let Some(n) = id.strip_prefix("pid:") {
            let pid: u32 = n.parse().map_err(|_| {
                ApiError::bad_request(format!("container '{id}': pid:N needs a number"))
            })?;
            if !self.host.container_alive(pid, None) {
                return Err(ApiError::not_found(format!(
                    "no process {pid} for container '{id}'"
                )));
            }
            return Ok((pid, None));
        }
        if let Some(c) = self
            .state
            .containers
            .iter()
            .find(|c| c.name == id && !self.mine(c.node.as_deref()))
        {
            return Err(ApiError::conflict(format!(
                "container '{id}' runs on appliance '{}': use it there",
                c.node.as_deref().unwrap_or_default()
            )));
        }
        let c = self
            .state
            .containers
            .iter()
            .find(|c| c.name == id)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .state
                    .containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                ApiError::not_found(format!(
                    "no container '{id}' (containers: {}; or give pid:N)",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?;
        if !self.host.container_alive(c.pid, Some(&c.name)) {
            return Err(ApiError::conflict(format!(
                "container '{id}' is gone (its init {} exited)",
                c.pid
            )));
        }
        Ok((c.pid, Some(c.name.clone())))
    }

    /// Containers diad started.
    pub fn containers(&self) -> Vec<Container> {
        self.state
            .containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                pid: c.pid,
                status: if !self.mine(c.node.as_deref()) {
                    format!("on {}", c.node.as_deref().unwrap_or_default())
                } else if self.host.container_alive(c.pid, Some(&c.name)) {
                    "running".into()
                } else {
                    "gone".into()
                },
                volumes: self.state.volume_names(|v| attached_to(v, &c.name)),
                ports: self.state.port_names(|p| p.container == c.name),
            })
            .collect()
    }

    /// Starts a container.
    pub fn create_container(&mut self, name: &str) -> Result<Container, ApiError> {
        check_name("container", name).map_err(ApiError::bad_request)?;
        if self.state.containers.iter().any(|c| c.name == name) {
            return Err(ApiError::conflict(format!(
                "container '{name}' already exists"
            )));
        }
        let pid = self.host.start_container(name)?;
        self.state.containers.push(ContainerState {
            name: name.into(),
            pid,
            node: self.here(),
        });
        if let Err(e) = self.save() {
            let _ = self.host.stop_container(pid);
            self.state.containers.pop();
            return Err(e);
        }
        info!(container = %name, pid, "container started");
        self.containers()
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ApiError::internal("container vanished"))
    }

    /// Stops a container (refused while volumes are attached to it).
    pub fn delete_container(&mut self, name: &str) -> Result<(), ApiError> {
        let i = self
            .state
            .containers
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| ApiError::not_found(format!("no container '{name}'")))?;
        let attached = self.state.volume_names(|v| attached_to(v, name));
        if !attached.is_empty() {
            return Err(ApiError::conflict(format!(
                "container '{name}' has volumes attached ({}): detach them first",
                attached.join(", ")
            )));
        }
        // Its ports go with it (their addresses are released).
        self.detach_ports_of(name)?;
        let c = self.state.containers.remove(i);
        if self.host.container_alive(c.pid, Some(&c.name)) {
            self.host.stop_container(c.pid)?;
        }
        self.save()?;
        info!(container = %name, "container stopped");
        Ok(())
    }
}

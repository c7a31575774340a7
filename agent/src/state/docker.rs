//! Docker engines netd serves (`POST /v1/docker`): `docker/NAME.json`, one
//! file each, replaced atomically, so a restarted netd serves them again.

use std::path::PathBuf;

use super::Store;
use crate::api::types::DockerEngineRequest;
use crate::error::{Error, Result};

const DOCKER: &str = "docker";

impl Store {
    fn docker_path(&self, name: &str) -> PathBuf {
        self.dir.join(DOCKER).join(format!("{name}.json"))
    }

    pub fn save_docker_engine(&self, req: &DockerEngineRequest) -> Result<()> {
        let dir = self.dir.join(DOCKER);
        std::fs::create_dir_all(&dir).map_err(|e| Error::state("create", &dir, e))?;
        self.write_json(&self.docker_path(&req.name), req, self.fsync)
    }

    pub fn remove_docker_engine(&self, name: &str) -> Result<()> {
        self.remove(&self.docker_path(name), self.fsync)
    }

    /// Every saved engine; unreadable records are set aside with a warning.
    pub fn load_docker_engines(
        &self,
        warnings: &mut Vec<String>,
    ) -> Result<Vec<DockerEngineRequest>> {
        let dir = self.dir.join(DOCKER);
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        self.load_dir(DOCKER, warnings, |req: &DockerEngineRequest, path| {
            crate::docker::validate_engine_name(&req.name).map_err(|e| e.to_string())?;
            let expected = format!("{}.json", req.name);
            if path
                .file_name()
                .is_some_and(|f| f.to_string_lossy() != expected)
            {
                return Err(format!("name {:?} does not match the file name", req.name));
            }
            Ok(())
        })
    }
}

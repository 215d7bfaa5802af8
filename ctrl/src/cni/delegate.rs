//! A delegated IPAM plugin (host-local and the like), run from `CNI_PATH`.

use super::*;

impl Plugin<'_> {
    /// Runs the delegated IPAM plugin with `cmd`, the network
    /// configuration (its `usePodCidr` filled in from `node`) at the
    /// highest spec version both sides speak; returns its stdout.
    pub(super) fn delegate(
        &self,
        plugin: &str,
        cmd: Cmd,
        node: Option<&Node>,
    ) -> Result<String, Error> {
        let exe = self.find_plugin(plugin)?;
        let mut conf =
            serde_json::to_value(&self.conf).map_err(|e| Error::FailedToDecode(e.to_string()))?;
        if let (Some(n), Some(ipam)) = (node, conf.get_mut("ipam")) {
            fill_pod_cidr(ipam, n.pod_cidr);
        }
        let theirs = self.plugin_versions(&exe)?;
        let v = theirs
            .iter()
            .copied()
            .filter(|v| *v <= self.version)
            .max()
            .ok_or_else(|| {
                Error::IncompatibleVersion(format!(
                    "{plugin} speaks none of the versions up to {}",
                    self.version
                ))
            })?;
        if let Some(o) = conf.as_object_mut() {
            o.insert("cniVersion".into(), Value::String(v.to_string()));
        }
        let out = self.exec(&exe, cmd, &conf.to_string())?;
        if out.0 != 0 {
            let e = serde_json::from_str::<ErrorResult>(&out.1)
                .map(Error::from)
                .unwrap_or_else(|_| Error::Custom(104, format!("{plugin} failed"), out.1.clone()));
            return Err(e);
        }
        Ok(out.1)
    }

    pub(super) fn find_plugin(&self, plugin: &str) -> Result<PathBuf, Error> {
        let path = self.var("CNI_PATH")?;
        path.split(':')
            .map(|d| Path::new(d).join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                invalid(
                    "ipam.type",
                    format!("{plugin}: no such plugin in CNI_PATH ({path})"),
                )
            })
    }

    pub(super) fn plugin_versions(&self, exe: &Path) -> Result<Vec<SpecVersion>, Error> {
        let (code, out) = self.exec(exe, Cmd::Version, r#"{"cniVersion":"0.4.0"}"#)?;
        let v: Value = serde_json::from_str(&out)
            .ok()
            .filter(|_| code == 0)
            .ok_or_else(|| {
                Error::Custom(
                    104,
                    format!("{} VERSION failed", exe.display()),
                    out.clone(),
                )
            })?;
        Ok(v.get("supportedVersions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| SpecVersion::from_str(s.as_str()?).ok())
            .collect())
    }

    pub(super) fn exec(&self, exe: &Path, cmd: Cmd, stdin: &str) -> Result<(i32, String), Error> {
        let mut c = Command::new(exe);
        c.env_clear();
        for k in [
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_ARGS",
            "CNI_PATH",
            "PATH",
        ] {
            if let Some(v) = (self.env)(k) {
                c.env(k, v);
            }
        }
        c.env("CNI_COMMAND", <&str>::from(cmd));
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::IOFailure(format!("{}: {e}", exe.display())))?;
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::IOFailure(format!("{}: {e}", exe.display())))?;
        Ok((
            out.status.code().unwrap_or(999),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }
}

//! Ignition: CABPK's subset and refusals.

use super::*;
use crate::bootstrap::ignition::{data_url, parse};
use crate::bootstrap::script::{PathCondition, WriteMode};
use crate::bootstrap::users::Flavor;

fn with(extra: &str) -> String {
    format!("{{\"ignition\":{{\"version\":\"2.3.0\"}},{extra}}}")
}

const KUBEADM_UNIT: &str = r#"{"name":"kubeadm.service","enabled":true,"contents":"[Unit]\nConditionPathExists=/etc/kubeadm.yml\n[Service]\nType=oneshot\nExecStart=/bin/bash /etc/kubeadm.sh\n"}"#;

#[test]
fn cabpk_join() {
    let plan = parse(JOIN_IGNITION).unwrap();
    assert_eq!(
        step_names(&plan),
        [
            "user capi",
            "file /etc/sudoers.d/capi",
            "file /etc/ssh/sshd_config",
            "file /etc/capssh/motd",
            "file /etc/modules-load.d/k8s.conf",
            "file /etc/kubeadm.sh",
            "file /etc/kubeadm.yml",
            "file /etc/systemd/system/kubeadm.service",
        ]
    );
    let sudoers = file(&plan, "/etc/sudoers.d/capi");
    assert_eq!(sudoers.content, b"capi ALL=(ALL) NOPASSWD:ALL\n");
    assert_eq!((sudoers.mode, sudoers.user.as_deref(), sudoers.group.as_deref()), (Some(0o600), Some("0"), Some("0")));
    let motd = file(&plan, "/etc/capssh/motd");
    assert_eq!((motd.user.as_deref(), motd.group.as_deref()), (Some("nobody"), Some("nogroup")));
    assert_eq!(motd.content, b"managed by capssh\n");
    let script = String::from_utf8(file(&plan, "/etc/kubeadm.sh").content.clone()).unwrap();
    assert!(script.starts_with("#!/bin/bash\nset -e\n\nswapoff -a\n\nkubeadm join --config /etc/kubeadm.yml --v 5\n"), "{script}");
    assert_eq!(file(&plan, "/etc/kubeadm.sh").mode, Some(0o700));
    assert_eq!(file(&plan, "/etc/modules-load.d/k8s.conf").how, WriteMode::Replace);
    match &plan.last {
        Some(Last::Exec { label, argv, condition }) => {
            assert_eq!(label, "kubeadm.service");
            assert_eq!(argv, &["/bin/bash", "/etc/kubeadm.sh"]);
            assert_eq!(condition, &Some(PathCondition { path: "/etc/kubeadm.yml".to_string(), negated: false }));
        }
        _ => panic!("kubeadm.service last"),
    }
    let Some(Step::User(user)) = plan.steps.first() else { panic!("user first") };
    assert_eq!(user.flavor, Flavor::Ignition);
    assert_eq!(user.groups, ["adm", "sudo"]);
    assert!(user.password_hash.as_deref().is_some_and(|h| h.starts_with("$6$")));

    let job = crate::bootstrap::plan(JOIN_IGNITION.as_bytes(), Format::Ignition, &meta()).unwrap();
    assert!(job.script.contains("if [ -e '/etc/kubeadm.yml' ]; then\n"), "{}", job.script);
    assert!(job.script.contains("'/bin/bash' '/etc/kubeadm.sh' < /dev/null\n"));
    assert!(!job.script.contains("systemctl"), "kubeadm.service alone needs no systemctl");
}

#[test]
fn data_urls() {
    assert_eq!(data_url("data:,a%20b%0A").unwrap(), b"a b\n");
    assert_eq!(data_url("data:;base64,aGk=").unwrap(), b"hi");
    assert_eq!(data_url("data:text/plain;charset=utf-8;base64,aGk").unwrap(), b"hi");
    assert_eq!(data_url("data:,").unwrap(), b"");
    assert!(data_url("data:,%zz").is_none());
    assert!(data_url("https://example.com/x").is_none());
}

#[test]
fn files_modes_owners_and_append() {
    let data = with(&format!(
        r#""storage":{{"files":[
            {{"filesystem":"root","path":"/a","mode":420,"append":true,"contents":{{"source":"data:,x"}}}},
            {{"path":"/b","overwrite":false,"user":{{"id":1000}},"contents":{{"source":"data:,y","verification":{{}}}}}},
            {{"path":"/c","append":true}}
        ]}},"systemd":{{"units":[{KUBEADM_UNIT}]}}"#
    ));
    let plan = parse(&data).unwrap();
    let a = file(&plan, "/a");
    assert_eq!((a.how, a.mode, a.user.as_deref()), (WriteMode::Append, Some(0o644), None));
    let b = file(&plan, "/b");
    assert_eq!((b.how, b.mode, b.user.as_deref(), b.group.as_deref()), (WriteMode::Create, Some(0o644), Some("1000"), Some("0")));
    let c = file(&plan, "/c");
    assert_eq!((c.how, c.mode, c.content.len()), (WriteMode::Append, None, 0));
}

#[test]
fn units_are_written_enabled_and_restarted() {
    let data = with(&format!(
        r#""systemd":{{"units":[{KUBEADM_UNIT},
            {{"name":"containerd.service","dropins":[{{"name":"10-capssh.conf","contents":"[Service]\nLimitNOFILE=1048576\n"}}]}},
            {{"name":"capssh-hello.service","enabled":true,"contents":"[Service]\nExecStart=/bin/true\n"}},
            {{"name":"old.service","enabled":false}}
        ]}}"#
    ));
    let plan = parse(&data).unwrap();
    assert_eq!(
        step_names(&plan),
        [
            "file /etc/systemd/system/kubeadm.service",
            "file /etc/systemd/system/containerd.service.d/10-capssh.conf",
            "file /etc/systemd/system/capssh-hello.service",
            "systemctl daemon-reload",
            "systemctl try-restart containerd.service",
            "systemctl enable capssh-hello.service",
            "systemctl restart capssh-hello.service",
            "systemctl disable old.service",
        ]
    );
    assert_parses(&crate::bootstrap::script::render(&plan));
}

#[test]
fn refusals_name_what_is_refused() {
    let cases = [
        (with(r#""storage":{"disks":[{"device":"/dev/sdb","wipeTable":true}]}"#), "storage.disks"),
        (with(r#""storage":{"filesystems":[{"name":"data","mount":{"device":"/dev/sdb1","format":"ext4"}}]}"#), "storage.filesystems"),
        (with(r#""storage":{"directories":[{"path":"/d"}]}"#), "storage.directories"),
        (with(r#""passwd":{"groups":[{"name":"g"}]}"#), "passwd.groups"),
        (with(r#""networkd":{"units":[{"name":"a.network"}]}"#), "networkd"),
        (with(r#""storage":{"files":[{"path":"/a","contents":{"source":"https://example.com/a"}}]}"#), "/a"),
        (with(r#""storage":{"files":[{"path":"/a","contents":{"verification":{"hash":"sha512-00"}}}]}"#), "verification"),
        (with(r#""systemd":{"units":[{"name":"ntpd.service","enabled":true}]}"#), "spec.ntp"),
        (with(r#""systemd":{"units":[{"name":"var-lib-data.mount","enabled":true,"contents":"[Mount]\n"}]}"#), "spec.mounts"),
        (with(r#""systemd":{"units":[{"name":"x.service","mask":true}]}"#), "mask"),
        (with(r#""systemd":{"units":[]}"#), "kubeadm.service"),
        (
            with(
                r#""systemd":{"units":[{"name":"kubeadm.service","contents":"[Service]\nType=oneshot\nEnvironment=A=b\nExecStart=/bin/bash /etc/kubeadm.sh\n"}]}"#,
            ),
            "Environment",
        ),
        (with(r#""systemd":{"units":[{"name":"kubeadm.service","contents":"[Service]\nType=oneshot\nExecStart=-/bin/sh -c 'x'\n"}]}"#), "ExecStart"),
        (
            with(
                r#""systemd":{"units":[{"name":"kubeadm.service","contents":"[Service]\nType=oneshot\nExecStart=/bin/x\n","dropins":[{"name":"a.conf"}]}]}"#,
            ),
            "drop-ins",
        ),
        (with(r#""extra":1"#), "extra"),
        (r#"{"ignition":{"version":"3.0.0"}}"#.to_string(), "ignition.version"),
        (r#"{"ignition":{"version":"2.3.0","config":{"append":[{"source":"https://x"}]}}}"#.to_string(), "ignition.config"),
    ];
    for (data, needle) in cases {
        let err = parse(&data).err().unwrap_or_else(|| panic!("{data} was accepted"));
        assert!(err.to_string().contains(needle), "{data}: {err}");
    }
    assert!(matches!(parse("{\"ignition\":"), Err(BootstrapError::Json { .. })));
}

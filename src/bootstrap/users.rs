//! Users, as cloud-init's `users` module (`cc_users_groups`, `Distro.create_user`) and
//! Ignition's `passwd.users` create them, with the same tools (getent, groupadd, useradd,
//! usermod, chpasswd -e, passwd -l/-u), made safe to run twice.
//!
//! cloud-init: a user that does not exist is created with `useradd` (missing groups first,
//! `--comment/--home/--gid/--groups/--shell/--inactive`, `-m`), its password hash set with
//! `chpasswd -e` (on stdin, never on a command line). For a user that exists already only the
//! password lock, sudo rules and SSH keys apply, as in cloud-init. `lock_passwd` defaults to
//! true (`passwd -l`); `lock_passwd: false` unlocks only when a password was given or the user
//! already has one. sudo rules go to /etc/sudoers.d/90-cloud-init-users (0440), with
//! `#includedir /etc/sudoers.d` added to /etc/sudoers when missing.
//!
//! Ignition: `useradd --create-home` (password `*` unless a hash is given) or, for an existing
//! user, `usermod` with the given fields (`--home … --move-home`, `--groups` replaces the
//! supplementary groups).
//!
//! Both: SSH keys are added to ~/.ssh/authorized_keys (0600, in ~/.ssh 0700, owned by the
//! user), each once; keys already there stay. (Flatcar's Ignition writes
//! ~/.ssh/authorized_keys.d/ignition instead.)

use super::script::{heredoc, put};
use super::shell::quote;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    CloudInit,
    Ignition,
}

#[derive(Debug)]
pub(crate) struct User {
    /// e.g. `users 1/2`.
    pub(crate) label: String,
    pub(crate) flavor: Flavor,
    pub(crate) name: String,
    pub(crate) gecos: Option<String>,
    pub(crate) groups: Vec<String>,
    pub(crate) homedir: Option<String>,
    pub(crate) primary_group: Option<String>,
    pub(crate) shell: Option<String>,
    /// cloud-init `inactive` given as a string (days).
    pub(crate) inactive: Option<String>,
    /// cloud-init `passwd`, ignition `passwordHash` (`Some("")`: ignition's `*`).
    pub(crate) password_hash: Option<String>,
    /// cloud-init only.
    pub(crate) lock_passwd: bool,
    /// cloud-init only: sudoers rules (without the user name).
    pub(crate) sudo: Vec<String>,
    pub(crate) ssh_authorized_keys: Vec<String>,
}

/// Where cloud-init writes sudo rules.
const SUDOERS_FILE: &str = "/etc/sudoers.d/90-cloud-init-users";

pub(crate) const PRELUDE: &str = r##"
# capssh_lock USER / capssh_unlock USER: as cloud-init (passwd, else usermod).
capssh_lock() {
	if command -v passwd > /dev/null 2>&1; then passwd -l "$1"; else usermod --lock "$1"; fi
}
capssh_unlock() {
	if command -v passwd > /dev/null 2>&1; then passwd -u "$1"; else usermod --unlock "$1"; fi
}

# capssh_has_password USER: whether USER's password (locked or not) is set.
capssh_has_password() {
	capssh_pw=$(getent shadow "$1" | cut -d: -f2)
	case $capssh_pw in
	'' | '!' | '!!' | '*' | '!*') return 1 ;;
	esac
	return 0
}

# capssh_group LABEL GROUP: creates GROUP if it does not exist.
capssh_group() {
	getent group "$2" > /dev/null 2>&1 || groupadd "$2" || capssh_fail "$1: could not create the group $2"
}

# capssh_sudoers LABEL: makes sudo read /etc/sudoers.d, as cloud-init does.
capssh_sudoers() {
	if [ -f /etc/sudoers ]; then
		if ! grep -Eq '^[[:space:]]*[#@]includedir[[:space:]]+/etc/sudoers\.d/?[[:space:]]*$' /etc/sudoers; then
			printf '\n# Added by capssh\n#includedir /etc/sudoers.d\n' >> /etc/sudoers || capssh_fail "$1: could not add #includedir /etc/sudoers.d to /etc/sudoers"
		fi
	else
		printf '# See sudoers(5) for more information on "#include" directives:\n\n# Added by capssh\n#includedir /etc/sudoers.d\n' > /etc/sudoers && chmod 0440 /etc/sudoers || capssh_fail "$1: could not create /etc/sudoers"
	fi
	mkdir -p /etc/sudoers.d && chmod 0750 /etc/sudoers.d || capssh_fail "$1: could not create /etc/sudoers.d"
}

# capssh_sudoers_keep: keeps the rules file as it is, to put back if the new rules do not parse
# (a name with a dot: sudo does not read it).
capssh_sudoers_keep() {
	rm -f /etc/sudoers.d/.90-cloud-init-users.capssh
	if [ -e /etc/sudoers.d/90-cloud-init-users ]; then cp -p /etc/sudoers.d/90-cloud-init-users /etc/sudoers.d/.90-cloud-init-users.capssh; fi
}

# capssh_sudoers_check LABEL: a rules file sudo cannot parse would lock everyone out of sudo,
# capssh's own login user included: checked with visudo and, when invalid, put back as it was.
capssh_sudoers_check() {
	if command -v visudo > /dev/null 2>&1 && ! capssh_visudo=$(visudo -cf /etc/sudoers.d/90-cloud-init-users 2>&1); then
		if [ -e /etc/sudoers.d/.90-cloud-init-users.capssh ]; then
			mv -f /etc/sudoers.d/.90-cloud-init-users.capssh /etc/sudoers.d/90-cloud-init-users
		else
			rm -f /etc/sudoers.d/90-cloud-init-users
		fi
		capssh_fail "$1: the sudo rules do not parse, so they were not installed (visudo: $capssh_visudo)"
	fi
	rm -f /etc/sudoers.d/.90-cloud-init-users.capssh
}

# capssh_authkeys LABEL USER < keys: adds each key line missing from USER's authorized_keys.
capssh_authkeys() {
	capssh_home=$(getent passwd "$2" | cut -d: -f6)
	[ -n "$capssh_home" ] || capssh_fail "$1: could not find the home directory of $2"
	capssh_ids="$(id -u "$2"):$(id -g "$2")" || capssh_fail "$1: could not find the ids of $2"
	if [ ! -d "$capssh_home/.ssh" ]; then
		mkdir -p "$capssh_home/.ssh" && chmod 0700 "$capssh_home/.ssh" && chown "$capssh_ids" "$capssh_home/.ssh" || capssh_fail "$1: could not create $capssh_home/.ssh"
	fi
	capssh_keys=$capssh_home/.ssh/authorized_keys
	if [ ! -e "$capssh_keys" ]; then
		(umask 077 && : > "$capssh_keys") && chown "$capssh_ids" "$capssh_keys" || capssh_fail "$1: could not create $capssh_keys"
	elif [ -s "$capssh_keys" ] && [ -n "$(tail -c 1 "$capssh_keys")" ]; then
		echo >> "$capssh_keys" || capssh_fail "$1: could not write $capssh_keys"
	fi
	while IFS= read -r capssh_key; do
		grep -qxF -e "$capssh_key" "$capssh_keys" || printf '%s\n' "$capssh_key" >> "$capssh_keys" || capssh_fail "$1: could not add a key to $capssh_keys"
	done
}
"##;

/// The script lines for one user.
pub(crate) fn emit(out: &mut String, user: &User) {
    let label = quote(&user.label);
    let name = quote(&user.name);
    let fail = |what: &str| format!("capssh_fail {}", quote(&format!("{}: {what}", user.label)));
    out.push_str(&format!("printf '[capssh] %s: %s\\n' {label} {name}\n"));
    match user.flavor {
        Flavor::CloudInit => cloud_init(out, user, &fail),
        Flavor::Ignition => ignition(out, user, &fail),
    }
    if !user.ssh_authorized_keys.is_empty() {
        let body: String = user.ssh_authorized_keys.iter().map(|key| format!("{key}\n")).collect();
        out.push_str(&heredoc(&format!("capssh_authkeys {label} {name}"), &body, ""));
    }
}

fn cloud_init(out: &mut String, user: &User, fail: &dyn Fn(&str) -> String) {
    let name = quote(&user.name);
    let mut ignored: Vec<&str> = Vec::new();
    let mut options = Vec::new();
    let mut option = |flag: &str, value: &Option<String>, key: &'static str| {
        if let Some(value) = value {
            options.push(format!("{flag} {}", quote(value)));
            ignored.push(key);
        }
    };
    option("--comment", &user.gecos, "gecos");
    option("--home", &user.homedir, "homedir");
    option("--gid", &user.primary_group, "primary_group");
    option("--shell", &user.shell, "shell");
    option("--inactive", &user.inactive, "inactive");
    if !user.groups.is_empty() {
        options.push(format!("--groups {}", quote(&user.groups.join(","))));
        ignored.push("groups");
    }
    if user.password_hash.is_some() {
        ignored.push("passwd");
    }
    out.push_str(&format!("if getent passwd {name} > /dev/null 2>&1; then\n\tcapssh_new=0\n"));
    if !ignored.is_empty() {
        let note = format!("{}: {} exists already: {} left as they are (as cloud-init does)", user.label, user.name, ignored.join(", "));
        out.push_str(&format!("\tprintf '[capssh] %s\\n' {}\n", quote(&note)));
    }
    out.push_str("else\n\tcapssh_new=1\n");
    let mut groups: Vec<&String> = user.groups.iter().collect();
    groups.extend(user.primary_group.as_ref());
    for group in groups {
        out.push_str(&format!("\tcapssh_group {} {}\n", quote(&user.label), quote(group)));
    }
    let options: String = options.iter().map(|o| format!("{o} ")).collect();
    out.push_str(&format!("\tuseradd {options}-m {name} || {}\n", fail(&format!("useradd {} failed", user.name))));
    if let Some(hash) = user.password_hash.as_deref().filter(|h| !h.is_empty()) {
        out.push_str(&heredoc("\tchpasswd -e", &format!("{}:{hash}\n", user.name), &format!("|| {}", fail("chpasswd failed"))));
    }
    out.push_str("fi\n");
    if user.lock_passwd {
        out.push_str(&format!("capssh_lock {name} || {}\n", fail("could not lock the password")));
    } else {
        let given = user.password_hash.as_deref().is_some_and(|h| !h.is_empty());
        let unlock = format!("capssh_unlock {name} || {}", fail("could not unlock the password"));
        let not_new = format!(
            "printf '[capssh] %s\\n' {}",
            quote(&format!("{}: lock_passwd is false but {} has no password: left locked (as cloud-init does)", user.label, user.name))
        );
        let new_branch = if given { unlock.clone() } else { not_new.clone() };
        out.push_str(&format!(
            "if [ \"$capssh_new\" = 1 ]; then\n\t{new_branch}\nelif capssh_has_password {name}; then\n\t{unlock}\nelse\n\t{not_new}\nfi\n"
        ));
    }
    if !user.sudo.is_empty() {
        let lines: Vec<String> = user.sudo.iter().map(|rule| format!("{} {rule}", user.name)).collect();
        let block = format!("\n# User rules for {}\n{}\n", user.name, lines.join("\n"));
        let present: Vec<String> = lines.iter().map(|line| format!("grep -qxF -e {} {SUDOERS_FILE} 2> /dev/null", quote(line))).collect();
        out.push_str(&format!("capssh_sudoers {}\nif ! {{ {}; }}; then\n\tcapssh_sudoers_keep\n", quote(&user.label), present.join(" && ")));
        out.push_str(&format!("\tif [ -e {SUDOERS_FILE} ]; then\n"));
        put(out, &user.label, SUDOERS_FILE, "-", block.as_bytes(), "append");
        out.push_str("\telse\n");
        put(out, &user.label, SUDOERS_FILE, "0440", format!("# Created by capssh\n{block}").as_bytes(), "replace");
        out.push_str(&format!("\tfi\n\tcapssh_sudoers_check {}\nfi\n", quote(&user.label)));
    }
}

fn ignition(out: &mut String, user: &User, fail: &dyn Fn(&str) -> String) {
    let name = quote(&user.name);
    let mut common = String::new();
    for (flag, value) in [("--comment", &user.gecos), ("--gid", &user.primary_group), ("--shell", &user.shell)] {
        if let Some(value) = value {
            common.push_str(&format!("{flag} {} ", quote(value)));
        }
    }
    if !user.groups.is_empty() {
        common.push_str(&format!("--groups {} ", quote(&user.groups.join(","))));
    }
    let home = |flags: &str| user.homedir.as_ref().map(|h| format!("{flags} {} ", quote(h))).unwrap_or_default();
    out.push_str(&format!("if getent passwd {name} > /dev/null 2>&1; then\n"));
    let modify = format!("{}{common}", home("--move-home --home"));
    if modify.is_empty() {
        out.push_str("\t:\n");
    } else {
        out.push_str(&format!("\tusermod {modify}{name} || {}\n", fail(&format!("usermod {} failed", user.name))));
    }
    out.push_str(&format!(
        "else\n\tuseradd {}--create-home {common}{name} || {}\n",
        home("--home-dir"),
        fail(&format!("useradd {} failed", user.name))
    ));
    if user.password_hash.is_none() {
        out.push_str(&format!("\tusermod -p '*' {name} || {}\n", fail("could not disable the password")));
    }
    out.push_str("fi\n");
    match user.password_hash.as_deref() {
        Some("") => out.push_str(&format!("usermod -p '*' {name} || {}\n", fail("could not disable the password"))),
        Some(hash) => out.push_str(&heredoc("chpasswd -e", &format!("{}:{hash}\n", user.name), &format!("|| {}", fail("chpasswd failed")))),
        None => {}
    }
}

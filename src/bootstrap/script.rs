//! The host-side job script: what a [`Plan`] becomes.
//!
//! Shape: a prelude of small functions, then one block per step, each command followed by
//! `|| capssh_fail '…'` (no `set -e`, whose exceptions inside functions and `||` lists make it
//! unreliable), then the last step, whose exit status is the job's.
//!
//! File contents travel as base64 in quoted here-documents (`capssh_put … <<'CAPSSH_EOF'`), so
//! no content is ever on a command line (visible in `ps`) or interpreted by the shell. Files are
//! written to a temporary file in the target directory, given owner and mode, then renamed over
//! the target (atomic replace); `append` appends instead.
//!
//! bootcmd and runcmd each become their own script file in a private temporary directory, run
//! by `/bin/sh` with stdin from /dev/null, exactly as cloud-init runs them (cloud-init writes
//! runcmd to `…/scripts/runcmd` and executes it). So an `exit` in a runcmd item ends the runcmd
//! script (not the job's bookkeeping), `set -e` in an item applies to the later items, and
//! variables and `cd` carry from one item to the next. After each item capssh adds one line
//! that prints `[capssh] runcmd 2/5 exited with status N` and restores `$?`; it is left out
//! where an item does not end at a command boundary (a construct or here-document spanning
//! items), so the items' meaning never changes. An EXIT trap reports an item that ended the
//! script early. The job's exit status is the runcmd script's: that of its last item.

use super::shell::{Boundary, base64_lines, delimiter_for, quote};
use super::users::{self, User};

/// Everything the job does, in order.
pub(crate) struct Plan {
    /// `cloud-config` or `ignition`, for the script's header.
    pub(crate) source: &'static str,
    pub(crate) steps: Vec<Step>,
    /// The job's last step; its exit status is the job's. None: the job ends with 0.
    pub(crate) last: Option<Last>,
    /// Secret values the steps carry outside file contents (password hashes).
    pub(crate) secrets: Vec<String>,
}

impl Plan {
    pub(crate) fn files(&self) -> impl Iterator<Item = &FileWrite> {
        self.steps.iter().filter_map(|step| match step {
            Step::WriteFile(file) => Some(file),
            _ => None,
        })
    }
}

pub(crate) enum Step {
    /// A cloud-init command list (bootcmd) run as one /bin/sh script; it must exit 0.
    Commands {
        module: &'static str,
        items: Vec<String>,
        env: Vec<(String, String)>,
    },
    WriteFile(FileWrite),
    User(User),
    /// `systemctl <args>`, which must succeed.
    Systemctl {
        label: String,
        args: Vec<String>,
    },
}

pub(crate) enum Last {
    /// cloud-init's runcmd script.
    Runcmd(Vec<String>),
    /// A command run directly (ignition's kubeadm.service ExecStart), skipped with status 0
    /// when `condition` is not met, as systemd would skip the unit.
    Exec { label: String, argv: Vec<String>, condition: Option<PathCondition> },
}

/// systemd's `ConditionPathExists=[!]path`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PathCondition {
    pub(crate) path: String,
    pub(crate) negated: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Write a new file and rename it over the target.
    Replace,
    /// Like Replace, but fail if something exists at the path (ignition `overwrite: false`).
    Create,
    /// Append to the target (created if missing).
    Append,
}

pub(crate) struct FileWrite {
    /// e.g. `write_files 3/7`.
    pub(crate) label: String,
    pub(crate) path: String,
    pub(crate) content: Vec<u8>,
    /// None: leave the mode as it is (new files get 0644).
    pub(crate) mode: Option<u32>,
    /// None: leave as is. New parent directories get the same owner, as cloud-init does.
    pub(crate) user: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) how: WriteMode,
}

const PRELUDE: &str = r#"umask 022
cd / || exit 1
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}
export PATH
capssh_tmp=
capssh_work=
trap 'if [ -n "$capssh_tmp" ]; then rm -f "$capssh_tmp"; fi; if [ -n "$capssh_work" ]; then rm -rf "$capssh_work"; fi' EXIT

# capssh_fail MESSAGE: ends the job with status 1.
capssh_fail() {
	printf '[capssh] %s\n' "$1" >&2
	exit 1
}

# capssh_chown PATH USER GROUP: an empty USER or GROUP is left as it is.
capssh_chown() {
	if [ -n "$2" ] && [ -n "$3" ]; then chown "$2:$3" "$1"
	elif [ -n "$2" ]; then chown "$2" "$1"
	elif [ -n "$3" ]; then chgrp "$3" "$1"
	fi
}

# capssh_mkdir DIR USER GROUP: creates DIR and its missing parents, owned by USER/GROUP.
capssh_mkdir() {
	[ -d "$1" ] && return 0
	capssh_mkdir "$(dirname "$1")" "$2" "$3" || return 1
	mkdir "$1" || return 1
	capssh_chown "$1" "$2" "$3"
}

# capssh_put LABEL PATH MODE USER GROUP HOW < base64: writes a file. MODE is octal or - (leave
# as is); HOW is replace, create (fail if PATH exists) or append.
capssh_put() {
	capssh_dir=$(dirname "$2")
	capssh_mkdir "$capssh_dir" "$4" "$5" || capssh_fail "$1: could not create the directory $capssh_dir"
	if [ -d "$2" ] && [ ! -L "$2" ]; then capssh_fail "$1: $2 is a directory"; fi
	if [ "$6" = create ] && { [ -e "$2" ] || [ -L "$2" ]; }; then capssh_fail "$1: $2 already exists and overwrite is false"; fi
	capssh_tmp=$(mktemp "$capssh_dir/.capssh.XXXXXX") || capssh_fail "$1: could not create a temporary file in $capssh_dir"
	base64 -d > "$capssh_tmp" || capssh_fail "$1: could not decode the content of $2"
	capssh_target=$capssh_tmp
	if [ "$6" = append ]; then
		cat "$capssh_tmp" >> "$2" || capssh_fail "$1: could not append to $2"
		rm -f "$capssh_tmp"
		capssh_tmp=
		capssh_target=$2
	fi
	capssh_chown "$capssh_target" "$4" "$5" || capssh_fail "$1: could not give $2 to owner $4:$5"
	if [ "$3" != - ]; then chmod "$3" "$capssh_target" || capssh_fail "$1: could not set mode $3 on $2"; fi
	if [ "$6" != append ]; then
		mv -f "$capssh_tmp" "$2" || capssh_fail "$1: could not move the new $2 into place"
		capssh_tmp=
	fi
}
"#;

/// The job script for a plan.
pub(crate) fn render(plan: &Plan) -> String {
    let mut out = format!(
        "#!/bin/sh\n# capssh host job, generated from {} bootstrap data. Steps before the last one must\n\
         # succeed; the first failure ends the job with status 1 and a [capssh] line saying why.\n",
        plan.source
    );
    out.push_str(PRELUDE);
    if plan.steps.iter().any(|step| matches!(step, Step::User(_))) {
        out.push_str(users::PRELUDE);
    }
    let needs_work_dir = matches!(plan.last, Some(Last::Runcmd(_))) || plan.steps.iter().any(|step| matches!(step, Step::Commands { .. }));
    if needs_work_dir {
        out.push_str("\ncapssh_work=$(mktemp -d \"${TMPDIR:-/tmp}/capssh.XXXXXX\") || capssh_fail 'could not create a temporary directory'\n");
    }
    for step in &plan.steps {
        out.push('\n');
        match step {
            Step::Commands { module, items, env } => commands(&mut out, module, items, env),
            Step::WriteFile(file) => write_file(&mut out, file),
            Step::User(user) => users::emit(&mut out, user),
            Step::Systemctl { label, args } => {
                let args: Vec<String> = args.iter().map(|a| quote(a)).collect();
                let message = format!("{label}: systemctl {} failed", args.join(" "));
                out.push_str(&format!("systemctl {} || capssh_fail {}\n", args.join(" "), quote(&message)));
            }
        }
    }
    out.push('\n');
    match &plan.last {
        Some(Last::Runcmd(items)) => {
            out.push_str(&format!("printf '[capssh] runcmd: %s commands\\n' {}\n", items.len()));
            put(&mut out, "runcmd", "\"$capssh_work/runcmd\"", "0700", &command_script("runcmd", items, true), "replace");
            out.push_str(
                "/bin/sh \"$capssh_work/runcmd\" < /dev/null\ncapssh_rc=$?\n\
                 printf '[capssh] runcmd finished with status %s\\n' \"$capssh_rc\"\nexit \"$capssh_rc\"\n",
            );
        }
        Some(Last::Exec { label, argv, condition }) => {
            let command: Vec<String> = argv.iter().map(|a| quote(a)).collect();
            let run = format!(
                "printf '[capssh] %s: running %s\\n' {label} {shown}\n{command} < /dev/null\ncapssh_rc=$?\n\
                 printf '[capssh] %s exited with status %s\\n' {label} \"$capssh_rc\"\nexit \"$capssh_rc\"\n",
                label = quote(label),
                shown = quote(&argv.join(" ")),
                command = command.join(" "),
            );
            match condition {
                None => out.push_str(&run),
                Some(PathCondition { path, negated }) => {
                    let test = if *negated { format!("[ ! -e {} ]", quote(path)) } else { format!("[ -e {} ]", quote(path)) };
                    let directive = format!("ConditionPathExists={}{path}", if *negated { "!" } else { "" });
                    out.push_str(&format!("if {test}; then\n{run}fi\n"));
                    out.push_str(&format!("printf '[capssh] %s not run: %s is not met\\n' {} {}\nexit 0\n", quote(label), quote(&directive)));
                }
            }
        }
        None => out.push_str("printf '[capssh] done: no runcmd\\n'\nexit 0\n"),
    }
    out
}

/// `capssh_put` with base64 content in a here-document. `path` is already shell text.
pub(crate) fn put(out: &mut String, label: &str, path: &str, mode: &str, content: &[u8], how: &str) {
    out.push_str(&format!("capssh_put {} {path} {mode} '' '' {how} <<'CAPSSH_EOF'\n", quote(label)));
    out.push_str(&base64_lines(content));
    out.push_str("CAPSSH_EOF\n");
}

fn write_file(out: &mut String, file: &FileWrite) {
    let mode = file.mode.map_or_else(|| "-".to_string(), |m| format!("{m:04o}"));
    let owner = format!("{}:{}", file.user.as_deref().unwrap_or("-"), file.group.as_deref().unwrap_or("-"));
    out.push_str(&format!(
        "printf '[capssh] %s: %s (%s %s%s)\\n' {} {} {} {} {}\n",
        quote(&file.label),
        quote(&file.path),
        quote(&mode),
        quote(&owner),
        quote(match file.how {
            WriteMode::Append => ", append",
            WriteMode::Create => ", must not exist",
            WriteMode::Replace => "",
        }),
    ));
    let how = match file.how {
        WriteMode::Replace => "replace",
        WriteMode::Create => "create",
        WriteMode::Append => "append",
    };
    out.push_str(&format!(
        "capssh_put {} {} {mode} {} {} {how} <<'CAPSSH_EOF'\n",
        quote(&file.label),
        quote(&file.path),
        quote(file.user.as_deref().unwrap_or("")),
        quote(file.group.as_deref().unwrap_or("")),
    ));
    out.push_str(&base64_lines(&file.content));
    out.push_str("CAPSSH_EOF\n");
}

fn commands(out: &mut String, module: &str, items: &[String], env: &[(String, String)]) {
    out.push_str(&format!("printf '[capssh] {module}: %s commands\\n' {}\n", items.len()));
    let path = format!("\"$capssh_work/{module}\"");
    put(out, module, &path, "0700", &command_script(module, items, false), "replace");
    for (name, value) in env {
        out.push_str(&format!("{name}={} ", quote(value)));
    }
    out.push_str(&format!(
        "/bin/sh {path} < /dev/null\ncapssh_rc=$?\n\
         [ \"$capssh_rc\" -eq 0 ] || capssh_fail \"{module} exited with status $capssh_rc\"\n"
    ));
}

/// cloud-init's shellified command list (`#!/bin/sh`, one item per line), with a status line
/// after each item that ends at a command boundary (items that do not are grouped with the
/// next ones: `runcmd 2-4/5`). `report_exit` adds an EXIT trap naming the item or group that
/// ended the script before its last status line.
pub(crate) fn command_script(module: &str, items: &[String], report_exit: bool) -> Vec<u8> {
    let n = items.len();
    // Groups of items that end at a command boundary; the last may not.
    let mut groups: Vec<(usize, usize, bool)> = Vec::new();
    let mut boundary = Boundary::new();
    let mut first = 1;
    for (i, item) in items.iter().enumerate() {
        let k = i + 1;
        let closed = boundary.feed(item);
        if closed || k == n {
            groups.push((first, k, closed));
            first = k + 1;
        }
    }
    let label = |&(first, last, _): &(usize, usize, bool)| {
        if first == last { format!("{first}/{n}") } else { format!("{first}-{last}/{n}") }
    };
    let mut text = String::from("#!/bin/sh\n");
    if let Some(group) = groups.first() {
        text.push_str(&format!("capssh_status() {{ return \"$1\"; }}\ncapssh_next='{}'\n", label(group)));
        if report_exit {
            text.push_str(&format!(
                "trap 'capssh_rc=$?; if [ -n \"$capssh_next\" ]; then printf \"[capssh] {module} %s ended the {module} script with status %s\\n\" \"$capssh_next\" \"$capssh_rc\"; fi' EXIT\n"
            ));
        }
    }
    for (g, group) in groups.iter().enumerate() {
        let (first, last, closed) = *group;
        for item in &items[first - 1..last] {
            text.push_str(item);
            text.push('\n');
        }
        if closed {
            let next = groups.get(g + 1).map(label).unwrap_or_default();
            text.push_str(&format!(
                "capssh_rc=$?; capssh_next='{next}'; printf '[capssh] {module} {} exited with status %s\\n' \"$capssh_rc\"; capssh_status \"$capssh_rc\" && :\n",
                label(group)
            ));
        }
    }
    text.into_bytes()
}

/// `command` reading a plain-text here-document (lines that are not file contents: SSH keys,
/// `user:hash` for `chpasswd`), followed by `rest` (e.g. `|| capssh_fail …`), with a delimiter
/// that does not occur in the body.
pub(crate) fn heredoc(command: &str, body: &str, rest: &str) -> String {
    let delimiter = delimiter_for(body);
    let rest = if rest.is_empty() { String::new() } else { format!(" {rest}") };
    format!("{command} <<'{delimiter}'{rest}\n{body}{delimiter}\n")
}

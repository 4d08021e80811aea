//! POSIX sh text: quoting, here-documents, and a small lexer that tells whether a run of
//! shell text ends at a command boundary (so capssh can log a status line after it without
//! changing what the text means).

/// `text` as one single-quoted shell word (`'` becomes `'\''`), as cloud-init's `shellify`
/// quotes list-form commands.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A here-document delimiter that does not occur as a line of `body`.
pub(crate) fn delimiter_for(body: &str) -> String {
    let mut delimiter = String::from("CAPSSH_EOF");
    let mut n = 0;
    while body.lines().any(|line| line == delimiter) {
        n += 1;
        delimiter = format!("CAPSSH_EOF_{n}");
    }
    delimiter
}

/// Base64 of `bytes`, wrapped at 76 columns, each line ending in a newline (the body of a
/// `base64 -d <<'CAPSSH_EOF'` here-document; base64 never contains `_`, so the delimiter
/// cannot occur in it).
pub(crate) fn base64_lines(bytes: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 + 1);
    for chunk in encoded.as_bytes().chunks(76) {
        // Base64 output is ASCII.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// `if` … `fi`
    If,
    /// `for`/`while`/`until` … `done`
    Loop,
    /// `{` … `}`
    Brace,
    /// `(` … `)`
    Paren,
    /// `case` word `in` (patterns `)` commands `;;`)* `esac`
    Case(CaseState),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CaseState {
    Word,
    In,
    Pattern,
    Body,
}

/// Follows shell text item by item (each item is followed by a newline, as in cloud-init's
/// runcmd script) and says after each one whether the shell would be at a command boundary:
/// no open quote, substitution, here-document, line continuation, trailing `&&`/`||`/`|`, or
/// compound command (`if`, `for`, `while`, `until`, `case`, `{`, `(`). When it cannot tell,
/// it says no: the only cost of a wrong "no" is a missing status line.
#[derive(Default)]
pub(crate) struct Boundary {
    frames: Vec<Frame>,
    /// Here-documents announced on the current line: (delimiter, strip leading tabs).
    pending_heredocs: Vec<(String, bool)>,
    /// Inside a here-document body.
    heredoc: Option<(String, bool)>,
    /// A word at command position would be a reserved word.
    command_start: bool,
    /// After `&&`, `||` or `|`: a command must follow.
    needs_more: bool,
    /// Ended in the middle of a quote, substitution or line continuation.
    open: bool,
    /// Something this lexer does not follow: never report a boundary again.
    lost: bool,
}

impl Boundary {
    pub(crate) fn new() -> Self {
        Boundary { command_start: true, ..Default::default() }
    }

    /// Feeds one item (without its trailing newline) and reports whether the text so far ends
    /// at a command boundary.
    pub(crate) fn feed(&mut self, item: &str) -> bool {
        let mut text = String::with_capacity(item.len() + 1);
        text.push_str(item);
        text.push('\n');
        if self.open || self.lost {
            // An unterminated quote or continuation spans items: this lexer does not resume
            // inside one.
            self.lost = true;
            return false;
        }
        self.scan(&text);
        !self.lost && !self.open && self.frames.is_empty() && self.pending_heredocs.is_empty() && self.heredoc.is_none() && !self.needs_more
    }

    fn scan(&mut self, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() && !self.lost {
            if let Some((delimiter, strip_tabs)) = self.heredoc.clone() {
                // Consume one body line.
                let end = chars[i..].iter().position(|&c| c == '\n').map(|p| i + p);
                let Some(end) = end else {
                    self.open = true;
                    return;
                };
                let line: String = chars[i..end].iter().collect();
                let line = if strip_tabs { line.trim_start_matches('\t').to_string() } else { line };
                if line == delimiter {
                    self.heredoc = None;
                    self.next_heredoc();
                }
                i = end + 1;
                continue;
            }
            let c = chars[i];
            match c {
                '\n' => {
                    self.end_of_line();
                    i += 1;
                }
                ' ' | '\t' => i += 1,
                '#' => {
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                }
                ';' => {
                    if chars.get(i + 1) == Some(&';') {
                        match self.frames.last_mut() {
                            Some(Frame::Case(state)) if *state == CaseState::Body => *state = CaseState::Pattern,
                            _ => self.lost = true,
                        }
                        i += 2;
                    } else {
                        i += 1;
                    }
                    self.command_start = true;
                    self.needs_more = false;
                }
                '&' | '|' => {
                    let doubled = chars.get(i + 1) == Some(&c);
                    if let Some(Frame::Case(CaseState::Pattern)) = self.frames.last()
                        && c == '|'
                    {
                        i += 1;
                        continue;
                    }
                    self.needs_more = doubled || c == '|';
                    self.command_start = true;
                    i += if doubled { 2 } else { 1 };
                }
                '(' => {
                    if let Some(Frame::Case(CaseState::Pattern)) = self.frames.last() {
                        // Optional `(` before a case pattern.
                    } else if self.command_start {
                        self.frames.push(Frame::Paren);
                    } else if chars.get(i + 1) == Some(&')') {
                        // `name()`: a function definition; its body follows.
                        i += 1;
                        self.command_start = true;
                    } else {
                        self.lost = true;
                    }
                    i += 1;
                }
                ')' => {
                    match self.frames.last_mut() {
                        Some(Frame::Case(state)) if *state == CaseState::Pattern => *state = CaseState::Body,
                        Some(Frame::Paren) => {
                            self.frames.pop();
                        }
                        _ => self.lost = true,
                    }
                    self.command_start = true;
                    self.needs_more = false;
                    i += 1;
                }
                '<' | '>' => {
                    i = self.redirection(&chars, i);
                }
                _ => {
                    let start = i;
                    i = self.word_end(&chars, i);
                    if self.open {
                        return;
                    }
                    let word: String = chars[start..i].iter().collect();
                    self.word(&word);
                }
            }
        }
    }

    fn end_of_line(&mut self) {
        if matches!(self.frames.last(), Some(Frame::Case(CaseState::Word))) {
            self.lost = true;
        }
        self.command_start = true;
        self.next_heredoc();
    }

    fn next_heredoc(&mut self) {
        if !self.pending_heredocs.is_empty() {
            self.heredoc = Some(self.pending_heredocs.remove(0));
        }
    }

    /// A redirection operator at `i`; returns the index after it (and after a here-document's
    /// delimiter word).
    fn redirection(&mut self, chars: &[char], mut i: usize) -> usize {
        let heredoc = chars[i] == '<' && chars.get(i + 1) == Some(&'<') && chars.get(i + 2) != Some(&'<');
        if !heredoc {
            i += 1;
            while i < chars.len() && matches!(chars[i], '<' | '>' | '&' | '|' | '-') {
                i += 1;
            }
            return i;
        }
        i += 2;
        let strip_tabs = chars.get(i) == Some(&'-');
        if strip_tabs {
            i += 1;
        }
        while i < chars.len() && matches!(chars[i], ' ' | '\t') {
            i += 1;
        }
        let start = i;
        i = self.word_end(chars, i);
        if self.open || i == start {
            self.lost = true;
            return i;
        }
        let raw: String = chars[start..i].iter().collect();
        let delimiter: String = raw.chars().filter(|c| !matches!(c, '\'' | '"' | '\\')).collect();
        self.pending_heredocs.push((delimiter, strip_tabs));
        i
    }

    /// The end of the word starting at `i` (quotes, `$(…)`, `${…}` and backquotes included).
    fn word_end(&mut self, chars: &[char], mut i: usize) -> usize {
        while i < chars.len() {
            match chars[i] {
                ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>' => return i,
                '\\' => {
                    if i + 1 >= chars.len() || (chars[i + 1] == '\n' && i + 2 >= chars.len()) {
                        // A continuation line at the end of the item.
                        self.open = true;
                        return chars.len();
                    }
                    i += 2;
                }
                '\'' => match chars[i + 1..].iter().position(|&c| c == '\'') {
                    Some(p) => i += p + 2,
                    None => {
                        self.open = true;
                        return chars.len();
                    }
                },
                '"' => match skip_nested(chars, i + 1, '"') {
                    Some(end) => i = end + 1,
                    None => {
                        self.open = true;
                        return chars.len();
                    }
                },
                '`' => match skip_nested(chars, i + 1, '`') {
                    Some(end) => i = end + 1,
                    None => {
                        self.open = true;
                        return chars.len();
                    }
                },
                '$' if matches!(chars.get(i + 1), Some('(') | Some('{')) => {
                    let close = if chars[i + 1] == '(' { ')' } else { '}' };
                    match skip_nested(chars, i + 2, close) {
                        Some(end) => i = end + 1,
                        None => {
                            self.open = true;
                            return chars.len();
                        }
                    }
                }
                _ => i += 1,
            }
        }
        i
    }

    fn word(&mut self, word: &str) {
        let frame = self.frames.last().copied();
        if let Some(Frame::Case(state)) = frame {
            match state {
                CaseState::Word => {
                    self.set_case(CaseState::In);
                    return;
                }
                CaseState::In => {
                    if word == "in" {
                        self.set_case(CaseState::Pattern);
                    } else {
                        self.lost = true;
                    }
                    return;
                }
                CaseState::Pattern => {
                    if word == "esac" {
                        self.frames.pop();
                        self.command_start = false;
                    }
                    return;
                }
                CaseState::Body => {}
            }
        }
        self.needs_more = false;
        if !self.command_start {
            return;
        }
        self.command_start = false;
        match word {
            "if" | "then" | "else" | "elif" | "do" | "!" => {
                if word == "if" {
                    self.frames.push(Frame::If);
                }
                self.command_start = true;
            }
            "while" | "until" => {
                self.frames.push(Frame::Loop);
                self.command_start = true;
            }
            "for" => self.frames.push(Frame::Loop),
            "{" => {
                self.frames.push(Frame::Brace);
                self.command_start = true;
            }
            "case" => self.frames.push(Frame::Case(CaseState::Word)),
            "fi" => self.close(Frame::If),
            "done" => self.close(Frame::Loop),
            "}" => self.close(Frame::Brace),
            "esac" => match self.frames.last() {
                Some(Frame::Case(CaseState::Body)) => {
                    self.frames.pop();
                }
                _ => self.lost = true,
            },
            _ => {}
        }
    }

    fn set_case(&mut self, state: CaseState) {
        if let Some(Frame::Case(s)) = self.frames.last_mut() {
            *s = state;
        }
    }

    fn close(&mut self, frame: Frame) {
        if self.frames.last() == Some(&frame) {
            self.frames.pop();
        } else {
            self.lost = true;
        }
    }
}

/// Skips to the `close` character that ends a `"…"`, `` `…` ``, `$(…)` or `${…}` opened just
/// before `i`, following nested quotes and substitutions. `None` if the text ends first.
fn skip_nested(chars: &[char], mut i: usize, close: char) -> Option<usize> {
    let mut depth = 0usize;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            i += 2;
            continue;
        }
        if c == close && depth == 0 {
            return Some(i);
        }
        match c {
            '\'' if close != '"' && close != '`' => {
                i += chars[i + 1..].iter().position(|&c| c == '\'')? + 2;
                continue;
            }
            '"' if close != '"' => {
                i = skip_nested(chars, i + 1, '"')? + 1;
                continue;
            }
            '`' if close != '`' => {
                i = skip_nested(chars, i + 1, '`')? + 1;
                continue;
            }
            '$' if matches!(chars.get(i + 1), Some('(') | Some('{')) => {
                let inner = if chars[i + 1] == '(' { ')' } else { '}' };
                i = skip_nested(chars, i + 2, inner)? + 1;
                continue;
            }
            '(' if close == ')' => depth += 1,
            ')' if close == ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boundaries(items: &[&str]) -> Vec<bool> {
        let mut b = Boundary::new();
        items.iter().map(|item| b.feed(item)).collect()
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn delimiter_avoids_body_lines() {
        assert_eq!(delimiter_for("x\nCAPSSH_EOFX\n"), "CAPSSH_EOF");
        assert_eq!(delimiter_for("x\nCAPSSH_EOF\n"), "CAPSSH_EOF_1");
    }

    #[test]
    fn base64_wraps() {
        let lines = base64_lines(&[0u8; 100]);
        assert!(lines.lines().all(|l| l.len() <= 76));
        assert!(lines.ends_with('\n'));
        assert_eq!(base64_lines(b""), "");
    }

    #[test]
    fn simple_commands_are_boundaries() {
        assert_eq!(
            boundaries(&[
                "echo hi",
                "kubeadm join --config /run/kubeadm/kubeadm-join-config.yaml  && echo success > /run/cluster-api/bootstrap-success.complete",
                "'ls' '-l'",
                "echo \"$(hostname) ${HOME}\" `date` # comment (",
                "cat <<EOF > /etc/modules-load.d/containerd.conf\noverlay\nbr_netfilter\nEOF\n",
                "if true; then echo a; fi",
                "for i in 1 2; do echo $i; done",
                "case $x in a|b) echo a;; (c) echo c;; esac",
                "f() { echo f; }",
                "(cd /tmp && ls) 2>&1 | tail -n1",
                "sleep 1 &",
                "echo if fi done",
            ]),
            vec![true; 12]
        );
    }

    #[test]
    fn common_pre_kubeadm_commands_are_boundaries() {
        let items = [
            r#"sed -i 's/^#*\(PermitRootLogin\).*/\1 no/' /etc/ssh/sshd_config"#,
            "curl -sfL https://example.com/install.sh | sh -",
            "export PATH=$PATH:/opt/bin",
            r#"echo '{"exec-opts": ["native.cgroupdriver=systemd"]}' > /etc/docker/daemon.json"#,
            "[ -f /etc/x ] && rm -f /etc/x",
            "until kubectl get nodes >/dev/null 2>&1; do sleep 1; done",
            "for i in $(seq 1 10); do echo $((i+1)); done",
            r#"test "$(hostname)" = node || hostnamectl set-hostname "${NAME:-node}""#,
            r#"case "$(uname -m)" in x86_64) A=amd64;; aarch64) A=arm64;; esac"#,
            "cat <<-'EOF' > /etc/sysctl.d/k8s.conf
	net.ipv4.ip_forward = 1
	EOF",
            "echo a\\ b url#frag \"x # y\" 2>/dev/null &>/dev/null",
        ];
        assert_eq!(boundaries(&items), vec![true; items.len()]);
    }

    #[test]
    fn constructs_spanning_items_are_not_boundaries() {
        assert_eq!(boundaries(&["if true; then", "echo a", "fi", "echo b"]), vec![false, false, true, true]);
        assert_eq!(boundaries(&["for i in 1 2", "do echo $i", "done"]), vec![false, false, true]);
        assert_eq!(boundaries(&["cat <<EOF", "line", "EOF", "echo"]), vec![false, false, true, true]);
        assert_eq!(boundaries(&["echo a &&", "echo b"]), vec![false, true]);
        assert_eq!(boundaries(&["echo a |", "cat"]), vec![false, true]);
        assert_eq!(boundaries(&["{", "echo", "}"]), vec![false, false, true]);
        assert_eq!(boundaries(&["case x in", "x) echo;;", "esac"]), vec![false, false, true]);
    }

    #[test]
    fn unterminated_quotes_stop_status_lines() {
        assert_eq!(boundaries(&["echo 'a", "b'", "echo c"]), vec![false, false, false]);
        assert_eq!(boundaries(&["echo a \\", "b", "echo c"]), vec![false, false, false]);
        assert_eq!(boundaries(&["echo )", "echo c"]), vec![false, false]);
        // A case pattern inside $( ) is beyond this lexer: it says no.
        assert_eq!(boundaries(&["x=$(case a in a) echo b;; esac)", "echo c"]), vec![false, false]);
    }
}

//! No import cycles between the agent's modules: neither between the top-level modules of
//! `agent/src` nor between the sibling modules of any folder. Every `crate::`, `super::` and
//! `self::` path in the sources (use trees with braces included) is resolved to the module it
//! names; a cycle in the resulting graph fails the test and names the modules on it. Test modules
//! (`tests.rs`, `*_tests.rs`, inline `#[cfg(test)] mod … { … }`) are left out: a test may use any
//! module's fixtures.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_cycles_between_top_level_modules() {
    let files = sources();
    let mut graph = Graph::new();
    for (module, refs) in &files {
        let from = &module[0];
        let node = graph.entry(from.clone()).or_default();
        for target in refs.iter().filter_map(|r| r.first()) {
            if target != from {
                node.insert(target.clone());
            }
        }
    }
    let cycles = cycles("agent/src", &graph);
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn no_cycles_between_sibling_modules_of_any_folder() {
    let files = sources();
    let folders: BTreeSet<Vec<String>> = files
        .keys()
        .flat_map(|m| (1..m.len()).map(|n| m[..n].to_vec()))
        .collect();
    let mut found = Vec::new();
    for folder in folders {
        let depth = folder.len();
        let mut graph = Graph::new();
        for (module, refs) in &files {
            if module.len() <= depth || module[..depth] != folder[..] {
                continue;
            }
            let from = &module[depth];
            let node = graph.entry(from.clone()).or_default();
            for target in refs {
                if target.len() > depth && target[..depth] == folder[..] && &target[depth] != from {
                    node.insert(target[depth].clone());
                }
            }
        }
        found.extend(cycles(&folder.join("/"), &graph));
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// Every source file's module path and the module paths it refers to.
fn sources() -> BTreeMap<Vec<String>, Vec<Vec<String>>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for file in rust_files(&root) {
        let module = module_path(&root, &file);
        let text = fs::read_to_string(&file).unwrap();
        let refs = references(&without_test_modules(&strip_comments(&text)), &module);
        out.entry(module).or_insert_with(Vec::new).extend(refs);
    }
    assert!(
        out.len() > 50,
        "found only {} modules under {root:?}",
        out.len()
    );
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && !is_test_module(&path) {
            files.push(path);
        }
    }
    files
}

fn is_test_module(path: &Path) -> bool {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    stem == "tests" || stem.ends_with("_tests")
}

/// `proxy/outbound/mod.rs` is `proxy::outbound`, `proxy/refusal.rs` is `proxy::refusal`.
fn module_path(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text without inline test modules (`#[cfg(test)]` followed by `mod name {`, to the brace
/// that closes it).
fn without_test_modules(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let inline = after.trim_start().starts_with("mod ")
            && after
                .find('{')
                .is_some_and(|b| after.find(';').is_none_or(|s| b < s));
        if !inline {
            out.push_str("#[cfg(test)]");
            rest = after;
            continue;
        }
        let open = after.find('{').expect("checked above");
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Absolute module paths of every `crate::`, `super::` and `self::` path in `text`.
fn references(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !is_ident(bytes[i - 1]);
        if at_word_start && is_ident(bytes[i]) {
            let (word, end) = ident(bytes, i);
            let base = match word.as_str() {
                "crate" => Some(Vec::new()),
                "super" | "self" => Some(module.to_vec()),
                _ => None,
            };
            if let Some(mut base) = base {
                if word == "super" {
                    base.pop();
                }
                if bytes[end..].starts_with(b"::") {
                    let (paths, next) = tree(bytes, end + 2, base);
                    out.extend(paths);
                    i = next;
                    continue;
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// A use tree (or an inline path) starting at `i`, each path prefixed with `base`.
fn tree(bytes: &[u8], mut i: usize, mut base: Vec<String>) -> (Vec<Vec<String>>, usize) {
    loop {
        i = skip_space(bytes, i);
        if bytes.get(i) == Some(&b'{') {
            let mut paths = Vec::new();
            i += 1;
            loop {
                i = skip_space(bytes, i);
                match bytes.get(i) {
                    Some(b'}') => return (paths, i + 1),
                    Some(b',') => i += 1,
                    Some(_) => {
                        let (sub, next) = tree(bytes, i, base.clone());
                        paths.extend(sub);
                        i = next.max(i + 1);
                    }
                    None => return (paths, i),
                }
            }
        }
        if !bytes.get(i).copied().is_some_and(is_ident) {
            return (vec![base], i);
        }
        let (word, end) = ident(bytes, i);
        match word.as_str() {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => base.push(word),
        }
        if bytes[end..].starts_with(b"::") {
            i = end + 2;
        } else {
            return (vec![base], end);
        }
    }
}

fn ident(bytes: &[u8], start: usize) -> (String, usize) {
    let end = (start..bytes.len())
        .find(|&j| !is_ident(bytes[j]))
        .unwrap_or(bytes.len());
    (
        String::from_utf8_lossy(&bytes[start..end]).into_owned(),
        end,
    )
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// One cycle through each module that is on one (depth-first search), as `scope: a -> b -> a`.
fn cycles(scope: &str, graph: &Graph) -> Vec<String> {
    fn visit(
        node: &str,
        graph: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut found = Vec::new();
    for node in graph.keys() {
        let mut done = BTreeSet::new();
        if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done)
            && cycle.first() == Some(node)
        {
            found.push(format!("{scope}: {}", cycle.join(" -> ")));
        }
    }
    found
}

//! Holds the crate to the module layers drawn in `lib.rs`: a module may use only modules in
//! layers below its own. Read from the sources, so a new `use crate::…` that points upwards
//! (and would let an import loop back in) fails here.

use std::{collections::BTreeSet, fs, path::Path};

/// The layers, top first; the modules of one line may not use each other either.
const LAYERS: &[&[&str]] = &[
    &["network", "check"],
    &["thirdparty"],
    &["events"],
    &["moderation"],
    &["users"],
    &["status"],
    &["hub"],
    &["settings", "text", "ids"],
    &["irc"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|line| line.contains(&module))
}

/// The crate modules a source file names through `crate::`, outside its tests.
fn uses(source: &str) -> BTreeSet<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or(source);
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c, d}, e}`: the first word of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !word.is_empty() {
                            used.insert(std::mem::take(&mut word));
                        }
                        item_start = true;
                    }
                    c if item_start && (c.is_alphanumeric() || c == '_') => word.push(c),
                    _ if item_start && !word.is_empty() => {
                        used.insert(std::mem::take(&mut word));
                        item_start = false;
                    }
                    _ => {}
                }
            }
            if !word.is_empty() {
                used.insert(word);
            }
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            used.insert(word);
        }
    }
    used
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("the sources are readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&root).expect("under src");
        let first = relative.components().next().expect("a file name");
        let module = first.as_os_str().to_string_lossy();
        let module = module.trim_end_matches(".rs");
        if module == "lib" || module == "layering" {
            continue;
        }
        let own = layer(module).unwrap_or_else(|| panic!("{module} is in no layer of LAYERS"));
        let source = fs::read_to_string(&file).expect("a readable source");
        for used in uses(&source) {
            if used == module {
                continue;
            }
            match layer(&used) {
                Some(theirs) if theirs > own => {}
                _ => wrong.push(format!("{} uses crate::{used}", relative.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "uses against the layers: {wrong:#?}");
}

#[test]
fn uses_are_read_from_groups_and_paths() {
    let source = "use crate::{\n    hub::{Kit, lock},\n    ids,users, status as s,\n    irc::{a::{b, c}, d},\n};\n\
                  fn f() { crate::text::x(); }\n#[cfg(test)]\nmod tests { use crate::network; }";
    let found: Vec<String> = uses(source).into_iter().collect();
    assert_eq!(found, ["hub", "ids", "irc", "status", "text", "users"]);
}

//! The README and the docs hold: every relative link names a file of the repository.
//! (Its console examples run in `readme_examples.rs`.)

use checkout_harness::readme::broken_links;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn every_relative_link_of_the_readme_and_the_docs_names_a_file_that_exists() {
    let mut pages = vec![repo().join("README.md")];
    for entry in std::fs::read_dir(repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        for (line, target) in broken_links(page).unwrap() {
            broken.push(format!("{}:{line}: {target}", page.display()));
        }
    }
    assert!(broken.is_empty(), "links to nothing: {broken:#?}");
}

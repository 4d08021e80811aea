//! config/crd/bases must be exactly what the Rust types generate.
//! Fix a failure with: cargo run -- crds --output-dir config/crd/bases

use capssh::api::crds;
use std::path::Path;

#[test]
fn config_crd_bases_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/crd/bases");
    let generated = crds::all();
    for crd in &generated {
        let name = crds::file_name(crd);
        let on_disk = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|_| panic!("config/crd/bases/{name} is missing; run `cargo run -- crds --output-dir config/crd/bases`"));
        assert!(
            on_disk == crds::to_yaml(crd).unwrap(),
            "config/crd/bases/{name} differs from the types; run `cargo run -- crds --output-dir config/crd/bases`"
        );
    }
    let files = std::fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "yaml")).count();
    assert_eq!(files, generated.len(), "config/crd/bases holds a file no type generates");
}

//! Every WGSL shader under `shaders/` parses and validates with naga, with no
//! GPU needed.

use std::path::Path;

/// Shaders the library loads; the test checks this list against the folder.
const EXPECTED: &[&str] = &[
    "combine.wgsl",
    "distances.wgsl",
    "distances_to.wgsl",
    "krum_scores.wgsl",
    "mean_around_median.wgsl",
    "non_finite.wgsl",
    "order_stats.wgsl",
    "read_bandwidth.wgsl",
    "select.wgsl",
];

fn validate(name: &str, source: &str) {
    let module = match naga::front::wgsl::parse_str(source) {
        Ok(module) => module,
        Err(error) => panic!("{name} does not parse:\n{}", error.emit_to_string(source)),
    };
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    );
    if let Err(error) = validator.validate(&module) {
        panic!(
            "{name} does not validate:\n{}",
            error.emit_to_string(source)
        );
    }
}

#[test]
fn every_shader_validates() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut found: Vec<String> = std::fs::read_dir(&folder)
        .expect("shaders/ is readable")
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".wgsl"))
        .collect();
    found.sort();
    assert_eq!(
        found, EXPECTED,
        "shaders/ and EXPECTED list different files"
    );

    for name in &found {
        let source = std::fs::read_to_string(folder.join(name)).expect("shader is readable");
        validate(name, &source);
    }
}

//! The pipeline parser and validator must answer (a Pipeline or diagnostics), never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = berth_pipeline::parse(text, "fuzz.yaml")
    {
        let _ = berth_pipeline::Scheduler::new(
            &p,
            &berth_pipeline::Start::Event {
                event: berth_pipeline::Event::Commit,
                branch: "main".into(),
                tag: None,
            },
        );
    }
});

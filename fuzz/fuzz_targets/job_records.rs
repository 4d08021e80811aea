//! The job status parser, on what a host (or anything pretending to be one) prints back.
//! The first two bytes say how many jobs and paths were asked about.
#![no_main]

use capssh::ssh::job::parse_records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [jobs, paths, rest @ ..] = data else { return };
    let (jobs, paths) = (usize::from(jobs % 32), usize::from(paths % 32));
    if let Ok(records) = parse_records(&String::from_utf8_lossy(rest), jobs, paths) {
        assert_eq!((records.jobs.len(), records.present.len()), (jobs, paths));
    }
});

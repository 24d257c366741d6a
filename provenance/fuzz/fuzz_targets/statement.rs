//! Statement and SLSA predicate parsing and strict validation of arbitrary bytes.
#![no_main]
use attest_provenance::slsa::Provenance;
use attest_provenance::statement::Statement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(st) = Statement::from_json(data) {
        let _ = st.validate();
        if let Ok(p) = Provenance::from_value(&st.predicate) {
            let _ = p.validate();
            let _ = p.to_value();
        }
        let _ = st.to_json();
    }
});

//! Mutation fuzzing of the run directory's readers: training configurations (`config.json`,
//! `--config`), epoch log lines and data records parse and check to a value or a typed error,
//! never a panic. `UNET_FUZZ_CASES=N` sets the mutants per target.

use unet_data::fuzz::{self, CountingAllocator};
use unet_train::{DataRecord, EpochRecord, Recipe, TrainConfig};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// What one input may allocate.
const MAX_BYTES: usize = 16 << 20;

#[test]
fn damaged_run_files_parse_or_give_a_typed_error() {
    let cases = fuzz::cases(1500);
    let configs: Vec<Vec<u8>> = Recipe::ALL
        .iter()
        .map(|&r| TrainConfig::recipe(r).to_json().into_bytes())
        .collect();
    fuzz::run("train-config", &configs, cases, 21, MAX_BYTES, |b| {
        let config: TrainConfig = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())
    })
    .assert_clean();
    let record = br#"{"epoch":3,"global_step":81,"train_loss":0.33,"lr":0.00099,"validation":{"loss":0.32,"pixel_accuracy":0.85,"mean_iou":0.67,"dice":0.9,"v_rand":0.8,"v_info":0.9,"calibrated":{"threshold":0.2,"pixel_accuracy":0.88,"mean_iou":0.7}},"best":true,"train_seconds":15.2,"validation_seconds":1.1,"samples_per_second":7.1,"skipped_steps":0}"#;
    fuzz::run(
        "epoch-record",
        &[record.to_vec()],
        cases,
        22,
        MAX_BYTES,
        |b| serde_json::from_slice::<EpochRecord>(b).map(|_| ()),
    )
    .assert_clean();
    let data = br#"{"given":{"files":{"images":"em.tif","labels":"em-masks.tif"}},"absolute":{"files":{"images":"/d/em.tif","labels":"/d/em-masks.tif"}},"sha256":"8621c0f6"}"#;
    fuzz::run("data-record", &[data.to_vec()], cases, 23, MAX_BYTES, |b| {
        serde_json::from_slice::<DataRecord>(b).map(|_| ())
    })
    .assert_clean();
}

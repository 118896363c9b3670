//! The unthinned V-Rand / V-Info against scikit-image and a NumPy port of Fiji's formulas
//! (fixture written by `scripts/make_fixtures.py`).

use unet_metrics::{isbi_scores, label_components, Contingency, IsbiOptions};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

struct Case {
    page: usize,
    threshold: f64,
    values: Vec<(String, f64)>,
}

impl Case {
    fn get(&self, key: &str) -> f64 {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .1
    }
}

/// A tiny reader for the fixture's fixed layout: `"key": number` pairs, one case per object.
fn read_cases() -> (usize, usize, usize, Vec<Case>) {
    let text = std::fs::read_to_string(format!("{FIXTURES}/skimage_scores.json")).unwrap();
    let number_after = |s: &str, key: &str| -> f64 {
        let at = s.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
        let rest = s[at..].trim_start();
        let end = rest.find([',', '\n', '}']).unwrap();
        rest[..end].trim().parse().unwrap()
    };
    let (head, cases_text) = text.split_once("\"cases\"").unwrap();
    let pages = number_after(head, "pages") as usize;
    let height = number_after(head, "height") as usize;
    let width = number_after(head, "width") as usize;
    let cases = cases_text
        .split('{')
        .skip(1)
        .map(|obj| {
            let values = obj
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once(':')?;
                    let k = k.trim().trim_matches('"').to_string();
                    let v = v.trim_end_matches(|c: char| c.is_whitespace() || c == '}' || c == ']');
                    let v: f64 = v.trim().parse().ok()?;
                    Some((k, v))
                })
                .collect();
            let mut case = Case {
                page: 0,
                threshold: 0.0,
                values,
            };
            case.page = case.get("page") as usize;
            case.threshold = case.get("threshold");
            case
        })
        .collect();
    (pages, height, width, cases)
}

fn read_stack() -> (Vec<f32>, Vec<u8>) {
    let bytes = std::fs::read(format!("{FIXTURES}/skimage_prob.f32")).unwrap();
    let prob = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let labels = std::fs::read(format!("{FIXTURES}/skimage_labels.u8")).unwrap();
    (prob, labels)
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

#[test]
fn unthinned_scores_match_skimage_and_fiji_formulas() {
    let (pages, h, w, cases) = read_cases();
    let (prob, labels) = read_stack();
    assert_eq!(cases.len(), pages * 10);
    let page = h * w;
    let ln2 = std::f64::consts::LN_2;
    for case in &cases {
        let p = &prob[case.page * page..(case.page + 1) * page];
        let l = &labels[case.page * page..(case.page + 1) * page];
        let truth = label_components(&l.iter().map(|&x| x > 0).collect::<Vec<_>>(), h, w).unwrap();
        let mask: Vec<bool> = p.iter().map(|&x| f64::from(x) > case.threshold).collect();
        let proposal = label_components(&mask, h, w).unwrap();
        let c = Contingency::new(&truth.labels, &proposal.labels).unwrap();
        let what = format!("page {} t {}", case.page, case.threshold);

        // skimage excludes self-pairs: our formula without them matches it exactly.
        close(
            c.v_rand_without_self_pairs(),
            case.get("skimage_v_rand"),
            1e-12,
            &what,
        );
        // Fiji's value is larger: derive skimage's from Fiji's sums.
        let n = c.n as f64;
        let joint = (c.sum_joint_sq + c.singletons) as f64;
        let truth_sq = c.sum_truth_sq as f64;
        let proposal_sq = (c.sum_proposal_sq + c.singletons) as f64;
        close(
            c.v_rand(),
            2.0 * joint / (truth_sq + proposal_sq),
            1e-15,
            &what,
        );
        close(
            case.get("skimage_v_rand"),
            2.0 * (joint - n) / (truth_sq + proposal_sq - 2.0 * n),
            1e-12,
            &what,
        );
        assert!(c.v_rand() > case.get("skimage_v_rand"), "{what}");
        close(c.v_rand(), case.get("fiji_v_rand"), 1e-12, &what);

        // Entropies: skimage's conditional ones (bits), and the marginals.
        let e = c.entropies();
        close(e.truth / ln2, case.get("h_truth_bits"), 1e-10, &what);
        close(e.proposal / ln2, case.get("h_proposal_bits"), 1e-10, &what);
        close(
            e.proposal_given_truth / ln2,
            case.get("skimage_h_proposal_given_truth_bits"),
            1e-10,
            &what,
        );
        close(
            e.truth_given_proposal / ln2,
            case.get("skimage_h_truth_given_proposal_bits"),
            1e-10,
            &what,
        );
        close(c.v_info(), case.get("fiji_v_info"), 1e-10, &what);
    }

    // The stack function gives the same per-section values.
    let options = IsbiOptions::default();
    let report = isbi_scores(&prob, &labels, pages, h, w, &options).unwrap();
    let unthinned = report.unthinned.unwrap();
    for case in &cases {
        let k = options
            .thresholds
            .iter()
            .position(|&t| t == case.threshold)
            .unwrap();
        let s = &unthinned.per_threshold[k];
        close(
            s.v_rand_per_section[case.page],
            case.get("fiji_v_rand"),
            1e-12,
            "stack v_rand",
        );
        close(
            s.v_info_per_section[case.page],
            case.get("fiji_v_info"),
            1e-10,
            "stack v_info",
        );
    }
}

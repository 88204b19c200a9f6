//! Analysis conditions: `error_rate < 0.01 && latency_ms <= 200`, comparisons of a named value
//! with a number, joined by `&&` and `||` (`&&` binds tighter). Names are what a measurement
//! provides: `error_rate`, `latency_ms`, `requests` (proxy), `result` (a Prometheus query).

/// Evaluates `expr` with the values `vars`; an unknown name or a malformed condition is an error
/// that says which.
pub fn eval(expr: &str, vars: &[(&str, f64)]) -> Result<bool, String> {
    let mut any = false;
    for alt in expr.split("||") {
        let mut all = true;
        for cmp in alt.split("&&") {
            all &= compare(cmp.trim(), vars)?;
        }
        any |= all;
    }
    Ok(any)
}

/// Checks a condition's shape without values (names are checked against `names`).
pub fn check(expr: &str, names: &[&str]) -> Result<(), String> {
    let vars: Vec<(&str, f64)> = names.iter().map(|n| (*n, 0.0)).collect();
    eval(expr, &vars).map(|_| ())
}

fn compare(cmp: &str, vars: &[(&str, f64)]) -> Result<bool, String> {
    const OPS: [&str; 6] = ["<=", ">=", "==", "!=", "<", ">"];
    for op in OPS {
        if let Some((l, r)) = cmp.split_once(op) {
            let (l, r) = (l.trim(), r.trim());
            let value = |s: &str| -> Result<f64, String> {
                if let Ok(n) = s.parse::<f64>() {
                    return Ok(n);
                }
                vars.iter().find(|(n, _)| *n == s).map(|(_, v)| *v).ok_or_else(|| {
                    let known: Vec<&str> = vars.iter().map(|(n, _)| *n).collect();
                    format!("`{s}` in `{cmp}` is neither a number nor one of {}", known.join(", "))
                })
            };
            let (a, b) = (value(l)?, value(r)?);
            return Ok(match op {
                "<=" => a <= b,
                ">=" => a >= b,
                "==" => a == b,
                "!=" => a != b,
                "<" => a < b,
                _ => a > b,
            });
        }
    }
    Err(format!("`{cmp}` is not a comparison (use <, <=, >, >=, ==, !=)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_join_with_and_before_or() {
        let v = [("error_rate", 0.02), ("latency_ms", 150.0)];
        assert!(!eval("error_rate < 0.01", &v).unwrap());
        assert!(eval("error_rate < 0.05 && latency_ms <= 150", &v).unwrap());
        assert!(eval("error_rate < 0.01 || latency_ms < 200", &v).unwrap());
        assert!(!eval("error_rate < 0.01 || latency_ms < 100 && error_rate < 1", &v).unwrap());
        assert!(eval("0.5 > error_rate", &v).unwrap());
    }

    #[test]
    fn unknown_names_and_shapes_say_what_is_wrong() {
        let e = eval("errors < 1", &[("error_rate", 0.0)]).unwrap_err();
        assert!(e.contains("`errors`") && e.contains("error_rate"), "{e}");
        let e = eval("error_rate", &[("error_rate", 0.0)]).unwrap_err();
        assert!(e.contains("not a comparison"), "{e}");
        assert!(check("result >= 1", &["result"]).is_ok());
    }
}

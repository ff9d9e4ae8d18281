//! The overview's small charts: one series per minute as an SVG polyline, drawn on the server
//! (no chart script, no inline style: presentation attributes only, which the CSP allows).

/// The chart's drawing box.
const WIDTH: f64 = 300.0;
const HEIGHT: f64 = 60.0;

/// One chart: the polyline's points and the largest value (the top of the scale).
pub struct Chart {
    pub points: String,
    pub max: i64,
    pub total: i64,
    pub last: i64,
}

/// Draws `values` (oldest first) left to right, scaled so the largest touches the top.
pub fn chart(values: &[i64]) -> Chart {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let step = if values.len() > 1 {
        WIDTH / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = i as f64 * step;
            let y = HEIGHT - (*v as f64 / max as f64) * (HEIGHT - 2.0) - 1.0;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    Chart {
        points,
        max: values.iter().copied().max().unwrap_or(0),
        total: values.iter().sum(),
        last: values.last().copied().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_value_touches_the_top_and_zero_the_bottom() {
        let c = chart(&[0, 5, 10]);
        assert_eq!(c.points, "0.0,59.0 150.0,30.0 300.0,1.0");
        assert_eq!((c.max, c.total, c.last), (10, 15, 10));
        let flat = chart(&[0, 0]);
        assert_eq!(flat.points, "0.0,59.0 300.0,59.0");
        assert_eq!(chart(&[]).points, "");
    }
}

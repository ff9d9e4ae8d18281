//! Aligned text tables for the reports: the first column left-aligned, the others
//! right-aligned, a rule under the header.

/// `headers` and `rows` (each as long as `headers`) as an aligned table.
pub fn render(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut grid: Vec<Vec<String>> = vec![headers.iter().map(|h| (*h).to_owned()).collect()];
    grid.extend(rows);
    let widths: Vec<usize> = (0..headers.len())
        .map(|c| {
            grid.iter()
                .map(|r| r.get(c).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, r) in grid.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                if c == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_under_their_headers() {
        let t = render(
            &["name", "n"],
            vec![
                vec!["a".to_owned(), "1000".to_owned()],
                vec!["longer".to_owned(), "7".to_owned()],
            ],
        );
        assert_eq!(
            t,
            "name       n\n------  ----\na       1000\nlonger     7\n"
        );
    }
}

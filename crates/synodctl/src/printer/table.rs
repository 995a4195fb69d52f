//! The `table` format: the boxes drawn by olekukonko/tablewriter v0.0.5, the library
//! etcdctl 3.5 uses, with the settings etcdctl gives it (upper-case centred headers,
//! right-aligned cells, cells wrapped at word boundaries past 30 columns).
//!
//! Widths are counted in characters; tablewriter counts terminal columns, which differs only
//! for East Asian wide characters.

/// tablewriter's `MAX_ROW_WIDTH`: cells wider than this are wrapped at spaces.
const CELL_WIDTH_MAX: usize = 30;

/// tablewriter's penalty for a line longer than the limit (`defaultPenalty`).
const OVERLONG_LINE_PENALTY: i64 = 100_000;

fn width(text: &str) -> usize {
    text.chars().count()
}

/// Renders `header` and `rows` as tablewriter does with etcdctl's settings.
pub fn render(out: &mut Vec<u8>, header: &[&str], rows: &[Vec<String>]) {
    let columns = header.len().max(rows.iter().map(Vec::len).max().unwrap_or(0));
    let mut widths = vec![0; columns];
    let header_lines: Vec<Vec<String>> =
        header.iter().enumerate().map(|(i, h)| cell_lines(h, &mut widths[i])).collect();
    let row_lines: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|row| row.iter().enumerate().map(|(i, cell)| cell_lines(cell, &mut widths[i])).collect())
        .collect();

    let mut text = String::new();
    rule(&mut text, &widths);
    let height = header_lines.iter().map(Vec::len).max().unwrap_or(0);
    for x in 0..height {
        text.push('|');
        for (y, &w) in widths.iter().enumerate() {
            let cell = header_lines.get(y).and_then(|lines| lines.get(x)).map_or("", String::as_str);
            text.push(' ');
            text.push_str(&centre(&title(cell), w));
            text.push_str(" |");
        }
        text.push('\n');
    }
    rule(&mut text, &widths);
    for row in &row_lines {
        let height = row.iter().map(Vec::len).max().unwrap_or(0);
        for x in 0..height {
            for (y, lines) in row.iter().enumerate() {
                // tablewriter pads short cells with two spaces, then aligns those.
                let cell = lines.get(x).map_or("  ", String::as_str);
                text.push_str("| ");
                text.push_str(&right(cell, widths[y]));
                text.push(' ');
            }
            text.push_str("|\n");
        }
    }
    rule(&mut text, &widths);
    out.extend_from_slice(text.as_bytes());
}

/// `+----+-----+`
fn rule(text: &mut String, widths: &[usize]) {
    text.push('+');
    for &w in widths {
        text.push_str(&"-".repeat(w + 2));
        text.push('+');
    }
    text.push('\n');
}

/// tablewriter's `parseDimension`: the cell's lines after wrapping, widening its column.
fn cell_lines(cell: &str, column_width: &mut usize) -> Vec<String> {
    let raw: Vec<&str> = cell.split('\n').collect();
    let widest = raw.iter().map(|line| width(line)).max().unwrap_or(0).min(CELL_WIDTH_MAX);
    // With reflow on, the lines are joined into one paragraph and wrapped again.
    let lines = wrap(&raw.join(" "), widest);
    let widest = lines.iter().map(|line| width(line)).fold(widest, usize::max);
    *column_width = (*column_width).max(widest);
    lines
}

/// tablewriter's `WrapString`: splits at spaces into lines of at most `limit` characters
/// (or the longest word), minimising raggedness.
fn wrap(text: &str, limit: usize) -> Vec<String> {
    let words: Vec<&str> = text.split(' ').collect();
    let limit = words.iter().map(|w| width(w)).fold(limit, usize::max);
    wrap_words(&words, limit).into_iter().map(|line| line.join(" ")).collect()
}

/// tablewriter's `WrapWords`: the minimum-raggedness line breaking, with its costs.
fn wrap_words<'a>(words: &[&'a str], limit: usize) -> Vec<Vec<&'a str>> {
    let n = words.len();
    let limit = limit as i64;
    // length[i][j]: the width of words i..=j joined by single spaces.
    let mut length = vec![vec![0i64; n]; n];
    for i in 0..n {
        length[i][i] = width(words[i]) as i64;
        for j in i + 1..n {
            length[i][j] = length[i][j - 1] + 1 + width(words[j]) as i64;
        }
    }
    let mut next_break = vec![0usize; n];
    let mut cost = vec![i64::from(i32::MAX); n];
    for i in (0..n).rev() {
        if length[i][n - 1] <= limit {
            cost[i] = 0;
            next_break[i] = n;
            continue;
        }
        for j in i + 1..n {
            let slack = limit - length[i][j - 1];
            let mut c = slack * slack + cost[j];
            if length[i][j - 1] > limit {
                c += OVERLONG_LINE_PENALTY;
            }
            if c < cost[i] {
                cost[i] = c;
                next_break[i] = j;
            }
        }
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        // A break at or before `i` cannot happen: every word fits on some line.
        let end = next_break[i].max(i + 1);
        lines.push(words[i..end].to_vec());
        i = end;
    }
    lines
}

/// tablewriter's `Title`: underscores (and dots between letters) become spaces, upper case.
fn title(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let is_num_or_space = |c: char| c.is_ascii_digit() || c == ' ';
    let replaced: String = chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match c {
            '_' => ' ',
            '.' if (i != 0 && !is_num_or_space(chars[i - 1]))
                || (i != chars.len() - 1 && !is_num_or_space(chars[i + 1])) =>
            {
                ' '
            }
            c => c,
        })
        .collect();
    let trimmed = replaced.trim();
    if trimmed.is_empty() && !name.is_empty() {
        return " ".to_string();
    }
    trimmed.to_uppercase()
}

/// tablewriter's `Pad`: centred, the odd space on the right.
fn centre(text: &str, w: usize) -> String {
    let gap = w.saturating_sub(width(text));
    let left = gap / 2;
    format!("{}{text}{}", " ".repeat(left), " ".repeat(gap - left))
}

/// tablewriter's `PadLeft`: right-aligned.
fn right(text: &str, w: usize) -> String {
    format!("{}{text}", " ".repeat(w.saturating_sub(width(text))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(header: &[&str], rows: &[&[&str]]) -> String {
        let rows: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|s| s.to_string()).collect()).collect();
        let mut out = Vec::new();
        render(&mut out, header, &rows);
        String::from_utf8(out).unwrap()
    }

    /// etcdctl's endpoint health table, as etcdctl printed it against synod.
    #[test]
    fn endpoint_health_table() {
        assert_eq!(
            table(
                &["endpoint", "health", "took", "error"],
                &[&["127.0.0.1:23790", "true", "1.581077ms", ""]]
            ),
            concat!(
                "+-----------------+--------+------------+-------+\n",
                "|    ENDPOINT     | HEALTH |    TOOK    | ERROR |\n",
                "+-----------------+--------+------------+-------+\n",
                "| 127.0.0.1:23790 |   true | 1.581077ms |       |\n",
                "+-----------------+--------+------------+-------+\n",
            )
        );
    }

    /// With no rows, the header is drawn between rules.
    #[test]
    fn empty_table() {
        assert_eq!(
            table(&["ID", "raft applied index"], &[]),
            concat!(
                "+----+--------------------+\n",
                "| ID | RAFT APPLIED INDEX |\n",
                "+----+--------------------+\n",
                "+----+--------------------+\n",
            )
        );
    }

    /// Long cells wrap at spaces into lines of at most 30 characters, and the other cells
    /// of the row are padded: etcdctl's status table for a member with a raised alarm.
    #[test]
    fn long_cells_wrap() {
        let alarm = "memberID:343330765820263189 alarm:NOSPACE ";
        assert_eq!(
            table(&["raft applied index", "errors"], &[&["4", alarm]]),
            concat!(
                "+--------------------+--------------------------------+\n",
                "| RAFT APPLIED INDEX |             ERRORS             |\n",
                "+--------------------+--------------------------------+\n",
                "|                  4 |    memberID:343330765820263189 |\n",
                "|                    |                 alarm:NOSPACE  |\n",
                "+--------------------+--------------------------------+\n",
            )
        );
    }

    /// Headers are upper-cased with underscores as spaces.
    #[test]
    fn titles() {
        assert_eq!(title("raft_term"), "RAFT TERM");
        assert_eq!(title("db size"), "DB SIZE");
        assert_eq!(title("v1.0"), "V1.0");
        assert_eq!(title("a.b"), "A B");
    }
}

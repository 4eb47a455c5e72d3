//! ASCII tables as etcdctl draws them (olekukonko/tablewriter): `+---+` borders, headers
//! centred, cells right-aligned.

use std::io::{self, Write};

pub fn render(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let border: String = widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+";

    writeln!(out, "{border}")?;
    let cells = header.iter().zip(&widths).map(|(h, &w)| centred(h, w));
    writeln!(out, "{}", line(cells))?;
    writeln!(out, "{border}")?;
    if !rows.is_empty() {
        for row in rows {
            writeln!(out, "{}", line(row.iter().zip(&widths).map(|(c, &w)| format!("{c:>w$}"))))?;
        }
        writeln!(out, "{border}")?;
    }
    Ok(())
}

fn centred(text: &str, width: usize) -> String {
    let gap = width - text.chars().count();
    format!("{}{text}{}", " ".repeat(gap / 2), " ".repeat(gap - gap / 2))
}

fn line(cells: impl Iterator<Item = String>) -> String {
    cells.map(|c| format!("| {c} ")).collect::<String>() + "|"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_like_etcdctl_member_list() {
        let mut out = Vec::new();
        let rows = vec![vec!["8e9e05c52164694d".to_string(), "started".to_string(), "false".to_string()]];
        render(&mut out, &["ID", "STATUS", "IS LEARNER"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+------------------+---------+------------+\n\
             |        ID        | STATUS  | IS LEARNER |\n\
             +------------------+---------+------------+\n\
             | 8e9e05c52164694d | started |      false |\n\
             +------------------+---------+------------+\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let mut out = Vec::new();
        render(&mut out, &["NAME"], &[]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "+------+\n| NAME |\n+------+\n");
    }
}

//! etcdctl's `-w table` output parsed into its header and rows, so tests can check columns and
//! per-row invariants where the values themselves differ between servers.

/// A table: column names and rows of trimmed cells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The table in `text`: `+---+` lines are borders, the first `| … |` line is the header and
    /// the others are rows.
    pub fn parse(text: &str) -> Table {
        let mut lines = text.lines().map(str::trim).filter(|line| line.starts_with('|')).map(|line| {
            line.trim_matches('|').split('|').map(|cell| cell.trim().to_string()).collect::<Vec<_>>()
        });
        let header = lines.next().unwrap_or_default();
        Table { header, rows: lines.collect() }
    }

    /// The cells of column `name`, row by row. Panics if there is no such column.
    pub fn column(&self, name: &str) -> Vec<&str> {
        let i = self.header.iter().position(|h| h == name);
        let i = i.unwrap_or_else(|| panic!("no column {name:?} in {:?}", self.header));
        self.rows.iter().map(|row| row[i].as_str()).collect()
    }

    /// The rows whose `column` holds `value`.
    pub fn rows_where(&self, column: &str, value: &str) -> impl Iterator<Item = usize> {
        let cells = self.column(column);
        let value = value.to_string();
        (0..cells.len()).filter(move |&row| cells[row] == value)
    }

    /// The first row whose `column` holds `value`.
    pub fn row_where(&self, column: &str, value: &str) -> Option<usize> {
        self.rows_where(column, value).next()
    }

    /// The cell of `column` in row `row`.
    pub fn cell(&self, row: usize, column: &str) -> &str {
        self.column(column)[row]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcdctl_tables() {
        let text = "\
+------------------+---------+------+------------+
|        ID        | STATUS  | NAME | IS LEARNER |
+------------------+---------+------+------------+
| 79af5d9a696e7d29 | started |   m1 |      false |
|  316a7673d857b38 | started |      |      false |
+------------------+---------+------+------------+
";
        let table = Table::parse(text);
        assert_eq!(table.header, ["ID", "STATUS", "NAME", "IS LEARNER"]);
        assert_eq!(table.column("ID"), ["79af5d9a696e7d29", "316a7673d857b38"]);
        assert_eq!(table.column("NAME"), ["m1", ""]);
        assert_eq!(table.row_where("NAME", "m1"), Some(0));
        assert_eq!(table.rows_where("STATUS", "started").collect::<Vec<_>>(), [0, 1]);
        assert_eq!(table.cell(1, "STATUS"), "started");
        assert_eq!(Table::parse(""), Table::default());
    }
}

"""Reading CSV (with byte-order mark), Excel and SPSS; unreadable files get clear errors."""

import pandas as pd
import pytest
from allianceflow.errors import DataError
from allianceflow.io import atomic_path, find_table, read_table


def test_csv_with_byte_order_mark(tmp_path):
    p = tmp_path / "effects.csv"
    p.write_bytes("\ufeffstudy,r,n\na,0.1,20\n".encode())
    assert list(read_table(p).columns) == ["study", "r", "n"]


def test_spss_value_labels_are_applied(tmp_path):
    pyreadstat = pytest.importorskip("pyreadstat")
    p = tmp_path / "patients.sav"
    df = pd.DataFrame({"patient": [1.0, 2.0], "arm": [0.0, 1.0]})
    pyreadstat.write_sav(df, str(p), variable_value_labels={"arm": {0.0: "SP", 1.0: "CBASP"}})
    out = read_table(p)
    assert list(out["arm"]) == ["SP", "CBASP"]


def test_excel_first_sheet(tmp_path):
    p = tmp_path / "effects.xlsx"
    with pd.ExcelWriter(p) as xl:
        pd.DataFrame({"study": ["a"], "yi": [0.1], "vi": [0.01]}).to_excel(xl, sheet_name="data",
                                                                            index=False)
        pd.DataFrame({"note": ["x"]}).to_excel(xl, sheet_name="notes", index=False)
    assert list(read_table(p).columns) == ["study", "yi", "vi"]


@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    (b"study,r,n\n", "no rows"),
    ("study,r,n\nM\xfcller,0.1,20\n".encode("latin-1"), "not valid UTF-8"),
])
def test_unreadable_csv(tmp_path, content, words):
    p = tmp_path / "effects.csv"
    p.write_bytes(content)
    with pytest.raises(DataError, match=words) as err:
        read_table(p)
    assert str(p) in str(err.value)


def test_corrupt_excel(tmp_path):
    p = tmp_path / "effects.xlsx"
    p.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="could not be read as xlsx"):
        read_table(p)


def test_find_table_none_or_several(tmp_path):
    with pytest.raises(DataError, match="no effects table"):
        find_table(tmp_path, "effects")
    (tmp_path / "effects.csv").write_text("study\n")
    (tmp_path / "effects.xlsx").write_text("")
    with pytest.raises(DataError, match="several effects tables"):
        find_table(tmp_path, "effects")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []

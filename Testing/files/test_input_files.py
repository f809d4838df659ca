"""Every file an input consists of: the data files a header names, in each form the formats allow."""

import pytest

from MedSAMSlicerLib.errors import PromptError
from MedSAMSlicerLib.files.input_files import check_regular_file, referenced_files


@pytest.mark.parametrize("name, header, data", [
    ("a.nhdr", "NRRD0004\ntype: short\ndata file: a.raw.gz\n", ["a.raw.gz"]),
    ("a.nhdr", "NRRD0004\ndatafile: /abs/a.raw\n", ["/abs/a.raw"]),
    ("a.nhdr", "NRRD0004\ndata file: LIST\ns1.raw\ns2.raw\n", ["s1.raw", "s2.raw"]),
    ("a.nhdr", "NRRD0004\ndata file: s%02d.raw 1 3 1\n", ["s01.raw", "s02.raw", "s03.raw"]),
    ("a.nrrd", "NRRD0004\ntype: short\n\n\x00\x01binary data: x.raw\n", []),
    ("a.mhd", "ObjectType = Image\nElementDataFile = voxels dir/a b.raw\n", ["voxels dir/a b.raw"]),
    ("a.mhd", "NDims = 3\nElementDataFile = LIST 2D\nz0.raw\nz1.raw\n", ["z0.raw", "z1.raw"]),
    ("a.mha", "NDims = 3\nElementDataFile = LOCAL\n\x00\x00", []),
    ("a.hdr", "analyze header", ["a.img"]),
    ("a.nii.gz", "not a header", []),
])
def test_a_header_names_its_data_files(tmp_path, name, header, data):
    (tmp_path / name).write_bytes(header.encode("latin-1"))
    found = referenced_files(tmp_path / name)
    assert found[0] == tmp_path / name
    assert found[1:] == [tmp_path / d for d in data]  # relative to the header's folder; an absolute one kept


def test_only_a_regular_file_is_an_input(tmp_path):
    (tmp_path / "file.json").write_text("{}")
    assert check_regular_file(tmp_path / "file.json", "prompt file", PromptError) == tmp_path / "file.json"
    with pytest.raises(PromptError, match="prompt file /dev/null cannot be read: it is a character device, not a file"):
        check_regular_file("/dev/null", "prompt file", PromptError)
    with pytest.raises(PromptError, match="does not exist"):
        check_regular_file(tmp_path / "absent.json", "prompt file", PromptError)

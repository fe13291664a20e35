def test_local_files_are_refused():
    assert True

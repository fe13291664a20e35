def test_list():
    assert True

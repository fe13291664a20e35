def test_dag():
    assert True

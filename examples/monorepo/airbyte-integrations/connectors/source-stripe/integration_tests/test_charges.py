def test_charges_are_read():
    assert True

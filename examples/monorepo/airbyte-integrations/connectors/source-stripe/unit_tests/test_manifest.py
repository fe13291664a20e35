def test_charges_stream_is_declared():
    assert True

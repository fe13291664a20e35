class SerializedDAG:
    pass

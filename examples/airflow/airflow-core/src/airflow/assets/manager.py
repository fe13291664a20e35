class AssetManager:
    pass

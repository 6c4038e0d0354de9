"""The playground app: a placeholder until the UI lands."""

from playground.engine import open_engine
from playground.settings import load_settings

if __name__ == "__main__":
    engine, notice = open_engine(load_settings())
    print(engine.info, notice or "")

"""Profiles as tables: ``frames.layers_frame`` (pandas, the optional ``[pandas]`` extra,
imported on the first call) behind ``Profile.to_pandas()`` and the client's ``layers_df``."""

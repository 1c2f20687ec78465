# NASH: narrow encoder (L0 heads/FFN units) + shallow decoder (uniform blocks). Wired in later.

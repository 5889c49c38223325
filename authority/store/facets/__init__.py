"""The store's facets, written once over ``Database`` and shared by both backends: one
module per aggregate, composed into one store object per backend (``SqlStore``)."""

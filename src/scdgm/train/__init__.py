"""The one training engine every model of scdgm trains through."""

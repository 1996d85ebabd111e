"""bertpress.compress"""

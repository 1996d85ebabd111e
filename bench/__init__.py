"""bertpress.bench"""

"""bertpress.export"""

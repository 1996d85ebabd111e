"""bertpress.finetune"""

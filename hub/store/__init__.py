"""The only SQL: one SQLite database per data directory.

db.py            Store: the connection, durability and locking; chats, approvals, threads, pins, usage rows
schema.py        the tables and their migrations
records.py       Records: agents' rows, their steps and events, their changes to files and rewinds
journal.py       Recorder, JournaledBus: the tree's events written as they happen; JournaledLedger:
                 the usage rows of a hub's model calls, written with them
"""

"""Pure domain code: no I/O, no clock, no globals. Everything here is a function
of its arguments, so it is tested exhaustively without a database or broker."""

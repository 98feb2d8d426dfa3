"""Small widgets the screens are built from; each renders data it is given and reads no journal."""

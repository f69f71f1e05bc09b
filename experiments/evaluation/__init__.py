"""How far does the k=5000 importance-sampled estimate understate log p(x)? AIS, BDMC and JVI."""

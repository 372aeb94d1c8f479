module farmexamples/webgo

go 1.19

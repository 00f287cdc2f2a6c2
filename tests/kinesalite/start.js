// Starts kinesalite on 127.0.0.1 (its CLI has no host option) at the port given as the first argument; prints "listening".
const port = parseInt(process.argv[2], 10)
require('kinesalite')({ createStreamMs: 50, deleteStreamMs: 50, updateStreamMs: 50, shardLimit: 100 }).listen(port, '127.0.0.1', () => console.log('listening ' + port))

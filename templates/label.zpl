^XA
^CI28
^PW{{width}}
^LL{{height}}
^LH0,0
^FO{{mm 2}},{{mm 2}}^BXN,{{mm 0.5}},200^FH^FD{{guid}}^FS
^FO{{mm 17}},{{mm 2}}^A0N,{{mm 3.5}},{{mm 3}}^FH^FD{{product}}^FS
^FO{{mm 17}},{{mm 7}}^A0N,{{mm 2.5}},{{mm 2.2}}^FH^FDHW {{hw_revision}}  FW {{fw_version}}^FS
^FO{{mm 17}},{{mm 10.5}}^A0N,{{mm 2.5}},{{mm 2.2}}^FH^FDMAC {{mac}}^FS
^FO{{mm 17}},{{mm 14}}^A0N,{{mm 2.5}},{{mm 2.2}}^FH^FD{{lot_date}}^FS
^FO{{mm 2}},{{mm 19}}^GB{{mm 56}},{{mm 0.3}},{{mm 0.3}}^FS
^FO{{mm 2}},{{mm 21}}^A0N,{{mm 3}},{{mm 2.1}}^FH^FD{{guid}}^FS
^PQ1
^XZ
